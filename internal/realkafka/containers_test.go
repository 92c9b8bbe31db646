package realkafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/container"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/modules/postgres"
	"github.com/testcontainers/testcontainers-go/wait"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/testlog"
)

// composeFile is the repository's docker-compose.yml, seen from this
// package's directory: the suite runs its Kafka and PostgreSQL.
const composeFile = "../../docker-compose.yml"

// dockerProbeTimeout bounds the look for a Docker daemon: one that does not
// answer in time counts as none.
const dockerProbeTimeout = 15 * time.Second

// dockerAnswers returns nil when a Docker daemon answers, else why not.
func dockerAnswers(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, dockerProbeTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		// Some testcontainers-go versions panic when they find no Docker host.
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("testcontainers: %v", r)
			}
		}()
		p, err := testcontainers.NewDockerProvider()
		if err == nil {
			err = p.Health(ctx) // closes p
		}
		if err != nil {
			err = fmt.Errorf("%s; testcontainers: %w", dockerHost(), err)
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("the Docker daemon did not answer within %s", dockerProbeTimeout)
	}
}

// dockerHost says where testcontainers-go looks for Docker first.
func dockerHost() string {
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		return "DOCKER_HOST=" + h
	}
	const socket = "/var/run/docker.sock"
	if _, err := os.Stat(socket); err != nil {
		return "DOCKER_HOST unset, no " + socket
	}
	return "DOCKER_HOST unset, " + socket + " exists"
}

// composeServices loads the compose file as `docker compose` would with
// nothing set in the environment (every ${VAR:-default} its default).
func composeServices(ctx context.Context) (types.Services, error) {
	abs, err := filepath.Abs(composeFile)
	if err != nil {
		return nil, err
	}
	p, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs}},
		Environment: types.Mapping{},
	})
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", abs, err)
	}
	for _, name := range []string{"kafka", "postgres"} {
		if _, ok := p.Services[name]; !ok {
			return nil, fmt.Errorf("%s has no %s service", abs, name)
		}
	}
	return p.Services, nil
}

// environment is a service's environment, as its container gets it.
func environment(s types.ServiceConfig) map[string]string {
	env := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			env[k] = *v
		}
	}
	return env
}

// hostListener is the container port of the compose file's Kafka listener
// for clients outside Docker's network: the one port it publishes.
func hostListener(kafka types.ServiceConfig) (uint32, error) {
	if len(kafka.Ports) != 1 {
		return 0, fmt.Errorf("compose service kafka publishes %d ports; the suite expects one, its listener for the host", len(kafka.Ports))
	}
	return kafka.Ports[0].Target, nil
}

// advertise replaces, in a KAFKA_ADVERTISED_LISTENERS value, the address of
// the listener on port with endpoint (host:port): the compose file
// advertises localhost and its fixed host port, the container gets whatever
// host port Docker maps.
func advertise(listeners string, port uint32, endpoint string) (string, error) {
	parts := strings.Split(listeners, ",")
	found := false
	for i, l := range parts {
		name, addr, ok := strings.Cut(l, "://")
		if !ok {
			continue
		}
		if _, p, err := net.SplitHostPort(addr); err == nil && p == strconv.FormatUint(uint64(port), 10) {
			parts[i], found = name+"://"+endpoint, true
		}
	}
	if !found {
		return "", fmt.Errorf("KAFKA_ADVERTISED_LISTENERS %q advertises no listener on port %d", listeners, port)
	}
	return strings.Join(parts, ","), nil
}

// advertisedFile is where the suite writes the advertised listeners once
// Docker has mapped the host port; the broker's entrypoint waits for it.
const advertisedFile = "/tmp/lockworker-advertised-listeners"

// kafkaRun is the apache/kafka image's start script (its CMD).
const kafkaRun = "/etc/kafka/docker/run"

// startKafka runs the compose file's Kafka service in a container and
// returns its address for clients on this machine.
func startKafka(ctx context.Context, t *testing.T, svc types.ServiceConfig) []string {
	env := environment(svc)
	target, err := hostListener(svc)
	require.NoError(t, err)
	port := fmt.Sprintf("%d/tcp", target)
	ctr, err := testcontainers.Run(ctx, svc.Image,
		testcontainers.WithEnv(env),
		testcontainers.WithExposedPorts(port),
		// The KRaft quorum voters and the inter-broker listener name the
		// service's host name.
		testcontainers.WithConfigModifier(func(c *container.Config) { c.Hostname = svc.Hostname }),
		testcontainers.WithEntrypoint("sh", "-c", fmt.Sprintf(
			`while [ ! -s %[1]s ]; do sleep 0.1; done; export KAFKA_ADVERTISED_LISTENERS="$(cat %[1]s)"; exec %[2]s`,
			advertisedFile, kafkaRun)),
		testcontainers.WithLifecycleHooks(testcontainers.ContainerLifecycleHooks{
			PostStarts: []testcontainers.ContainerHook{func(ctx context.Context, c testcontainers.Container) error {
				if err := wait.ForMappedPort(port).WaitUntilReady(ctx, c); err != nil {
					return fmt.Errorf("waiting for the mapping of %s: %w", port, err)
				}
				endpoint, err := c.PortEndpoint(ctx, port, "")
				if err != nil {
					return err
				}
				adv, err := advertise(env["KAFKA_ADVERTISED_LISTENERS"], target, endpoint)
				if err != nil {
					return err
				}
				return c.CopyToContainer(ctx, []byte(adv), advertisedFile, 0o644)
			}},
		}),
		testcontainers.WithWaitStrategy(wait.ForLog("Kafka Server started").WithStartupTimeout(3*time.Minute)),
	)
	testcontainers.CleanupContainer(t, ctr)
	if err != nil {
		t.Fatalf("starting %s (compose service kafka): %v%s", svc.Image, err, logsOf(ctx, ctr))
	}
	endpoint, err := ctr.PortEndpoint(ctx, port, "")
	require.NoError(t, err)
	brokers := []string{endpoint}
	if err := ping(ctx, brokers); err != nil {
		t.Fatalf("Kafka in %s does not answer at %s: %v%s", svc.Image, endpoint, err, logsOf(ctx, ctr))
	}
	t.Logf("Kafka %s (KRaft) at %s", svc.Image, endpoint)
	return brokers
}

// ping waits until a broker answers a metadata request.
func ping(ctx context.Context, brokers []string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		err := cl.Ping(ctx)
		if err == nil || ctx.Err() != nil {
			return errors.Join(err, ctx.Err())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// startPostgres runs the compose file's PostgreSQL service in a container
// and returns its URL.
func startPostgres(ctx context.Context, t *testing.T, svc types.ServiceConfig) string {
	ctr, err := postgres.Run(ctx, svc.Image, testcontainers.WithEnv(environment(svc)), postgres.BasicWaitStrategies())
	testcontainers.CleanupContainer(t, ctr)
	if err != nil {
		t.Fatalf("starting %s (compose service postgres): %v%s", svc.Image, err, logsOf(ctx, ctr))
	}
	url, err := ctr.ConnectionString(ctx, "sslmode=disable")
	require.NoError(t, err)
	t.Logf("PostgreSQL %s at %s", svc.Image, strings.SplitN(url, "@", 2)[1])
	return url
}

// logsOf is the end of a container's log, for a failure message.
func logsOf(ctx context.Context, ctr testcontainers.Container) string {
	if v := reflect.ValueOf(ctr); !v.IsValid() || v.IsNil() { // Run returns a nil *T when it created nothing
		return ""
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	rc, err := ctr.Logs(ctx)
	if err != nil {
		return fmt.Sprintf("\n(container logs: %v)", err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return "\ncontainer log (end):\n" + testlog.LastLines(string(b), 60)
}
