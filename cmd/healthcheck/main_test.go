package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestTarget(t *testing.T) {
	cases := []struct {
		args     []string
		httpAddr string
		want     string
		err      bool
	}{
		{nil, "", "http://127.0.0.1:8062/health", false},
		{nil, ":9000", "http://127.0.0.1:9000/health", false},
		{nil, "0.0.0.0:9000", "http://127.0.0.1:9000/health", false},
		{nil, "[::]:9000", "http://127.0.0.1:9000/health", false},
		{nil, "10.0.0.5:8062", "http://10.0.0.5:8062/health", false},
		// Trimmed, and blank is the default, as lockworker reads it.
		{nil, " :9000\n", "http://127.0.0.1:9000/health", false},
		{nil, "  ", "http://127.0.0.1:8062/health", false},
		{nil, "8062", "", true},
		{nil, ":http", "", true},
		{nil, ":0", "", true}, // a free port: healthcheck cannot know which
		{[]string{"http://x:1/health/kafka"}, ":8062", "http://x:1/health/kafka", false},
		// A path goes to HTTP_ADDR's port, as /health does.
		{[]string{"/health/live"}, "", "http://127.0.0.1:8062/health/live", false},
		{[]string{"/health/live"}, ":9000", "http://127.0.0.1:9000/health/live", false},
		{[]string{"/health/kafka"}, "10.0.0.5:8062", "http://10.0.0.5:8062/health/kafka", false},
		{[]string{"/health/live"}, ":0", "", true},
		{[]string{"/health/live"}, "8062", "", true},
		{[]string{"a", "b"}, "", "", true},
		{[]string{"https://x:1/health"}, "", "https://x:1/health", false},
		// Neither a URL nor a path: not asked as a URL.
		{[]string{"-h"}, "", "", true},
		{[]string{"-x"}, "", "", true},
		{[]string{"health"}, "", "", true},
		{[]string{"localhost:8062/health"}, "", "", true},
		{[]string{"ftp://x/health"}, "", "", true},
		{[]string{"http:///health"}, "", "", true},
	}
	for _, tc := range cases {
		getenv := func(name string) string {
			if name == "HTTP_ADDR" {
				return tc.httpAddr
			}
			return ""
		}
		got, err := target(tc.args, getenv)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("target(%q, %q) = %q, %v; want %q, error %v", tc.args, tc.httpAddr, got, err, tc.want, tc.err)
		}
	}
}

func TestCheck(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
		_, _ = w.Write([]byte(`{"status":"x"}`))
	}))
	defer srv.Close()

	if err := check(srv.URL+"/health", time.Second); err != nil {
		t.Errorf("200: %v", err)
	}
	status.Store(http.StatusServiceUnavailable)
	if err := check(srv.URL+"/health", time.Second); err == nil {
		t.Error("503 must fail")
	}
	if err := check(srv.URL+"/nothing", time.Second); err == nil {
		t.Error("404 must fail")
	}
	srv.Close()
	if err := check(srv.URL+"/health", time.Second); err == nil {
		t.Error("a closed port must fail")
	}
}

// TestExitCode runs main in a child process: every failure, a bad argument
// or HTTP_ADDR included, exits 1, never 2 (Docker's HEALTHCHECK reserves it).
func TestExitCode(t *testing.T) {
	if args, ok := os.LookupEnv("HEALTHCHECK_TEST_ARGS"); ok {
		os.Args = append([]string{"healthcheck"}, strings.Fields(args)...)
		main()
		os.Exit(0)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	httpAddr := srv.Listener.Addr().String()
	cases := []struct {
		name, args, httpAddr string
		want                 int
		says                 string // in its output
	}{
		{"-h", "-h", "", 0, "usage: healthcheck [URL | /path]"},
		{"--help", "--help", "", 0, "usage: healthcheck [URL | /path]"},
		{"a flag", "-x", "", 1, `healthcheck: "-x" is neither`},
		{"not a URL", "health", httpAddr, 1, "usage: healthcheck [URL | /path]"},
		{"healthy", srv.URL + "/health", "", 0, ""},
		{"unhealthy", srv.URL + "/other", "", 1, ""},
		{"no argument, healthy", "", httpAddr, 0, ""},
		{"path, healthy", "/health", httpAddr, 0, ""},
		{"path, unhealthy", "/other", httpAddr, 1, ""},
		{"two arguments", "a b", "", 1, ""},
		{"HTTP_ADDR not host:port", "", "8062", 1, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestExitCode$")
			cmd.Env = append(os.Environ(), "HEALTHCHECK_TEST_ARGS="+tc.args, "HTTP_ADDR="+tc.httpAddr)
			out, err := cmd.CombinedOutput()
			code := 0
			if exit, ok := errors.AsType[*exec.ExitError](err); ok {
				code = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.want {
				t.Errorf("exit code %d, want %d: %s", code, tc.want, out)
			}
			if !strings.Contains(string(out), tc.says) {
				t.Errorf("output %q, want it to say %q", out, tc.says)
			}
		})
	}
}
