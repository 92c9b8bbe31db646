package httpapi

import (
	"net/http"
	"time"
)

// statusStarting is /health's status until the process is wired.
const statusStarting = "starting"

// Starting is the handler while the process starts (migrating the
// database, checking its topics, publishing first states), before New's:
// /health/live answers 200, so a liveness probe does not restart a replica
// in a long migration; /health answers 503 "starting" with the step under
// way, and every other endpoint 503. started is when the process started,
// as Config.Started. cmd/lockworker goes on answering /health with it, the
// step "joining the consumer group", until the worker has joined its group.
func Starting(instance string, started time.Time, step func() string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health/live", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, Live{Status: statusOK, Live: true, Instance: instance, Uptime: time.Since(started).Seconds()})
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusServiceUnavailable, Health{Status: statusStarting, Live: true, Instance: instance,
			Uptime: time.Since(started).Seconds(), Step: step(), Partitions: []int32{}, Checks: map[string]Check{},
			EmbeddedKafka: embeddedKafka(r)})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusServiceUnavailable, "starting: "+step())
	})
	return mux
}
