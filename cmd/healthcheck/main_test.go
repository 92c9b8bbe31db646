package main

import (
	"net/http"
	"net/http/httptest"
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
		{nil, "8062", "", true},
		{[]string{"http://x:1/health/kafka"}, ":8062", "http://x:1/health/kafka", false},
		{[]string{"a", "b"}, "", "", true},
	}
	for _, tc := range cases {
		got, err := target(tc.args, tc.httpAddr)
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
