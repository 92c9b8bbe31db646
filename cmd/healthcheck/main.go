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
// is asked there too; an http:// or https:// URL is asked as it is. -h (or
// --help) prints the usage line and exits 0; any other argument is a usage
// error.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/omninode/lockworker/internal/config"
)

// usage is the command line, printed for -h and after a bad argument.
const usage = "usage: healthcheck [URL | /path]  (default /health on HTTP_ADDR's port; exit 0 on a 2xx answer, else 1)"

// errHelp is target's answer to -h.
var errHelp = errors.New("help requested")

func main() {
	url, err := target(os.Args[1:], os.Getenv)
	if errors.Is(err, errHelp) {
		fmt.Println(usage)
		return
	}
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
		return "", fmt.Errorf("%d arguments, one at most\n%s", len(args), usage)
	case len(args) == 1 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help"):
		return "", errHelp
	case len(args) == 1 && strings.HasPrefix(args[0], "/"):
		path = args[0]
	case len(args) == 1:
		// Else a flag (-x) or "localhost:8062/health" would be asked as a URL,
		// failing with "unsupported protocol scheme".
		if u, err := url.Parse(args[0]); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("%q is neither an http:// or https:// URL nor a path starting with /\n%s", args[0], usage)
		}
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
