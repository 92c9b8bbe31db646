package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// TestStartChildStopsWithContext: waiting for a child that never creates
// its schema ends with the context, not after the 60 s limit.
func TestStartChildStopsWithContext(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "never-migrates")
	require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\nexec sleep 120\n"), 0o755))
	cfg := DefaultConfig()
	cfg.WorkerBin = bin
	tg := &target{dbURL: "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=1"}
	defer tg.close() // stops the child
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := tg.startChild(ctx, &cfg, zerolog.Nop())
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 10*time.Second)
}
