# syntax=docker/dockerfile:1
#
# lockworker: static binaries on distroless, run as a non-root user.
#
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t lockworker .
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=kafka:9092 -e DATABASE_URL=... lockworker
#
# deploy/deploy_test.go builds ./cmd/... with the flags of the `go build` line
# below (read from this file) and checks the binaries are static, so keep that
# command on one logical line.

# go.mod's version, so the build downloads no toolchain. The tags float (a
# rebuilt image may bring another patch of the base layers): for builds
# that repeat, pin both images by digest (golang:1.26.8@sha256:..., and the
# distroless image below likewise), as you should pin lockworker's in
# deploy/kubernetes/kustomization.yaml (it ships newTag: latest).
ARG GO_VERSION=1.26.8

# The builder runs on the build machine's platform and cross-compiles, so a
# multi-platform build (docker buildx --platform linux/amd64,linux/arm64)
# needs no emulation.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=auto
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
# The commit built, for lockworker's start line and lockworker_build_info:
# the context leaves .git out, so the toolchain records none. Pass it:
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t lockworker .
# Empty (the default), lockworker reports "unknown".
ARG REVISION=
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags "-s -w -X main.buildRevision=${REVISION}" -o /out/ ./cmd/...

# distroless/static: CA certificates (for Kafka TLS with public CAs), tzdata,
# /etc/passwd with the nonroot user (65532); no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
WORKDIR /home/nonroot
# HTTP_ADDR's default: /health, /metrics.
EXPOSE 8062
# No curl here: cmd/healthcheck asks the path it is given on the port of
# HTTP_ADDR, which it reads from the container's environment as lockworker
# does, so another HTTP_ADDR moves the check with it. Liveness, not
# readiness: /health answers 503 while PostgreSQL or Kafka is unreachable and
# during migrations, and runtimes that act on this HEALTHCHECK (Docker Swarm
# replaces unhealthy tasks) would then restart every replica in an outage;
# /health/live asks the process only. docker-compose.yml asks /health
# instead, for readiness.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/healthcheck", "/health/live"]
ENTRYPOINT ["/usr/local/bin/lockworker"]
