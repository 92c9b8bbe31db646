// Command healthcheck asks a lockworker for its health and exits 0 when it
// answers 2xx, 1 otherwise (also on bad arguments or HTTP_ADDR: Docker's
// HEALTHCHECK reserves exit code 2). The container image has no shell or
// curl, so Docker's HEALTHCHECK runs this.
//
//	healthcheck [URL | /path]
//
// Without an argument it asks http://127.0.0.1:<port>/health, the port taken
// from HTTP_ADDR (default :8062) as lockworker reads it
// (config.HTTPAddrFromEnv), so changing HTTP_ADDR in the container's
// environment moves both. A path (starting with "/", such as /health/live)
// is asked there too; anything else is a URL, asked as it is.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/omninode/lockworker/internal/config"
)

func main() {
	url, err := target(os.Args[1:], os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
	if err := check(url, 4*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

// target is the URL to ask: a URL argument as it is, or a path argument
// (default /health) on HTTP_ADDR's port (read through getenv) on the
// loopback interface.
func target(args []string, getenv func(string) string) (string, error) {
	path := "/health"
	switch {
	case len(args) > 1:
		return "", fmt.Errorf("usage: healthcheck [URL | /path]")
	case len(args) == 1 && strings.HasPrefix(args[0], "/"):
		path = args[0]
	case len(args) == 1:
		return args[0], nil
	}
	httpAddr, err := config.HTTPAddrFromEnv(getenv)
	if err != nil {
		return "", err
	}
	host, port, _ := net.SplitHostPort(httpAddr) // checked by HTTPAddrFromEnv
	if n, _ := strconv.Atoi(port); n == 0 {
		return "", errors.New("HTTP_ADDR: port 0 listens on a free port, which healthcheck cannot know: give it the URL")
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}

func check(url string, timeout time.Duration) error {
	cl := &http.Client{Timeout: timeout}
	resp, err := cl.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s: %s %s", url, resp.Status, body)
	}
	return nil
}
