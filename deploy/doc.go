// Package deploy holds no code: its tests validate the deployment files
// (Dockerfile, .dockerignore, docker-compose.yml, deploy/kubernetes) with
// `go test ./...`, without Docker or a cluster. They check what can be checked
// here: every file parses, the compose file validates against the compose
// schema, every environment variable is a lockworker setting and the whole
// set passes config.WorkerFromEnv, probes and ports agree with HTTP_ADDR, and the
// Dockerfile's `go build` flags give static, stripped binaries that run.
package deploy
