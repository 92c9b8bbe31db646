package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/topics"
)

// Exit codes.
const (
	exitOK          = 0
	exitRefused     = 1
	exitUsage       = 2
	exitUnreachable = 3
	// exitLeaseLost is run's when the lease was found lost after the command
	// started (while it ran, just after it exited, or by a refused release),
	// and elect's when the leadership was: distinct from a refusal and from
	// the common failure code 1 of the command itself.
	exitLeaseLost = 4
)

const usage = `usage: lockctl COMMAND [flags]

commands:
  acquire --lock NAME [--owner ID] [--lease 30s] [--wait 0] [--metadata JSON] [--shared | --limit N]
          [--lock-delay 0] [--max-hold DURATION]
  release --lock NAME --owner ID [--token N]
  extend  --lock NAME --owner ID [--by DURATION] [--token N]
  query   --lock NAME
  cleanup [--lock NAME|*] [--max-age DURATION]
  revoke  --lock NAME [--owner ID] --reason TEXT   (an administrative operation)
  run     --lock NAME [--owner ID] [--wait 0] [--lease 30s] [--grace 10s] [--metadata JSON]
          [--shared | --limit N] [--lock-delay DURATION] [--max-hold DURATION] -- COMMAND [ARGS...]
  watch   [--from-beginning]  (lifecycle events; with --namespace, its locks' only)
  watch   --lock NAME  (its state now, then each change)
  locks   [--all]  (the table of locks, from the lock state topic)
  elect   --name NAME [--value V] [--owner ID] [--lease 30s] [--grace 10s] [--lock-delay DURATION]
          -- COMMAND [ARGS...]

flags of every command:
  --brokers host:port,...  (default: KAFKA_BOOTSTRAP_SERVERS, else EMBEDDED_KAFKA_ADDR, 127.0.0.1:9092 by default)
  --namespace NS  --requester NAME (replies on locks.replies.NAME; default lockctl)
  --timeout 10s (how long to wait for an answer)  --json (machine-readable output; run and
  elect: the grant or refusal event on stderr, their other messages text)
  LOCKWORKER_REPLY_TOPIC_REPLICATION_FACTOR: replicas of the reply topic when
  lockctl creates it (default: the broker's default.replication.factor)

authentication (when the workers require it): LOCKWORKER_TOKEN or
LOCKWORKER_TOKEN_FILE (a token; its subject is the requester), or
LOCKWORKER_SIGNING_KEY_FILE (the requester's private key, to sign tokens
for --requester, whose public half the workers have as
AUTH_REQUESTER_KEYS/<requester>.pem; LOCKWORKER_TOKEN_AUDIENCE and
LOCKWORKER_TOKEN_ISSUER set their aud and iss). It may hold the workers'
HMAC secret instead, an issuer secret that signs as anyone: only for token
issuers, never a requester. revoke, the one administrative command, needs
the admin claim: its tokens signed with the HMAC secret claim it (no other
command's do); a private key's never do, for the workers refuse a
requester key's token claiming it, so revoke with one is FORBIDDEN: give
it instead LOCKWORKER_TOKEN, a token an issuer signed with "admin": true.

Run "lockctl COMMAND -h" for a command's flags.
exit codes: 0 ok, 1 refused, 2 usage (or a command the workers refuse as
invalid), 3 unreachable (or an answer it cannot read). run: 127 if COMMAND
is not found, 126 if it cannot be run (not executable), both before taking
the lock; else the command's own exit code (128+N if signal N ended it)
once it started, except 4 when
lockctl found the lease lost before releasing it: while the command ran (it
was stopped), just after it exited by itself, or by a refused release (the
worker had ended the lease first); lockctl says which on stderr. 1 when
stopped before the command started. A release that gets no answer keeps
that code: stderr says the lock may stay held until its lease runs out,
and for --lock-delay after.
elect: campaigns until it leads (1 if interrupted first), then as run, 4
when the leadership was found lost before it resigned. run and elect stop COMMAND (SIGTERM, SIGKILL
after --grace) when they hear that the lease is lost, and, without a
terminal, what COMMAND left in its process group when it exits by itself,
before releasing; a lease lost by expiry or revoke keeps the lock from everyone for --lock-delay, by default
--grace plus the reply timeout (60s at most; 0 for run --shared): enough for COMMAND to be gone
after an expiry, and after a revoke that reaches lockctl promptly, not
after one it hears late (cut off from Kafka: see --lock-delay in
"lockctl run -h"). Ctrl-C, SIGTERM or a hang-up stop COMMAND so too and
release the lock; a second Ctrl-C SIGKILLs COMMAND and what it started at
once and ends lockctl, leaving the lock to its lease.
`

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// cli is one invocation: its output and the settings every command shares.
type cli struct {
	stdout, stderr io.Writer
	cmd            string
	fs             *flag.FlagSet // the command's flags, as given
	brokers        string
	namespace      string
	requester      string
	timeout        seconds
	json           bool
	cfg            config.Config // environment: config.ClientFromEnv's (brokers, topics, TLS, SASL)
	// events is where printEvent and refused write: stdout, but run's and
	// elect's stderr, their stdout being COMMAND's.
	events io.Writer
	// stderrMu serializes the lines goroutines write on stderr (warnf,
	// linef); a command holds it to keep them back until its header is
	// out.
	stderrMu sync.Mutex
}

// warnf writes a warning on stderr: "lockctl <command>: warning: ...".
func (c *cli) warnf(format string, args ...any) {
	c.linef("warning: "+format, args...)
}

// linef writes one line on stderr, "lockctl <command>: ...", under
// stderrMu.
func (c *cli) linef(format string, args ...any) {
	c.stderrMu.Lock()
	defer c.stderrMu.Unlock()
	fmt.Fprintf(c.stderr, "lockctl %s: %s\n", c.cmd, fmt.Sprintf(format, args...))
}

// run is lockctl with its arguments (without the program name); it returns
// the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	c := &cli{stdout: stdout, stderr: stderr, events: stdout, cmd: args[0]}
	var do func(context.Context, []string) error
	fs := flag.NewFlagSet("lockctl "+c.cmd, flag.ContinueOnError)
	// Parse's errors are told below as any usage error: one line and a
	// hint, not the flags in full, which -h prints.
	fs.SetOutput(io.Discard)
	c.fs = fs
	switch c.cmd {
	case "acquire":
		do = c.acquireFlags(fs)
	case "release":
		do = c.releaseFlags(fs)
	case "extend":
		do = c.extendFlags(fs)
	case "query":
		do = c.queryFlags(fs)
	case "cleanup":
		do = c.cleanupFlags(fs)
	case "revoke":
		do = c.revokeFlags(fs)
	case "run":
		do = c.runFlags(fs)
	case "watch":
		do = c.watchFlags(fs)
	case "locks":
		do = c.locksFlags(fs)
	case "elect":
		do = c.electFlags(fs)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "lockctl: unknown command %q\nrun 'lockctl help' for usage\n", c.cmd)
		return exitUsage
	}
	fs.StringVar(&c.brokers, "brokers", "", "comma-separated Kafka brokers (default: KAFKA_BOOTSTRAP_SERVERS, else EMBEDDED_KAFKA_ADDR, 127.0.0.1:9092 by default)")
	fs.StringVar(&c.namespace, "namespace", "", "lock namespace")
	fs.StringVar(&c.requester, "requester", "", "requester name: replies come on locks.replies.<requester> (default: the subject of\n$LOCKWORKER_TOKEN or $LOCKWORKER_TOKEN_FILE's token, else lockctl)")
	c.timeout = seconds{d: 10 * time.Second}
	fs.Var(&c.timeout, "timeout", "how long to wait for lockworker's answer (not counting --wait): a `duration` or seconds")
	jsonHelp := "print events as JSON, one per line"
	if c.cmd == "run" || c.cmd == "elect" {
		c.events, jsonHelp = stderr, holderJSONHelp
	}
	fs.BoolVar(&c.json, "json", false, jsonHelp)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.Usage()
			return exitOK
		}
		return c.report(usageError{err.Error()})
	}
	// --brokers stands for KAFKA_BOOTSTRAP_SERVERS: checked as the variable
	// is, and it is what the variable's TLS and SASL settings need.
	getenv, where := os.Getenv, "environment"
	if c.brokers != "" {
		getenv = func(name string) string {
			if name == "KAFKA_BOOTSTRAP_SERVERS" {
				return c.brokers
			}
			return os.Getenv(name)
		}
		where = "environment and --brokers"
	}
	// Only the Kafka client's settings: the worker's (its database, its
	// HTTP, its secrets' files), set in a shell shared with lockworker,
	// are not lockctl's to refuse.
	cfg, err := config.ClientFromEnv(getenv)
	if err != nil {
		msg := err.Error()
		if c.brokers != "" {
			msg = strings.ReplaceAll(msg, "KAFKA_BOOTSTRAP_SERVERS: ", "--brokers: ")
		}
		return c.report(usageError{where + ": " + msg})
	}
	c.cfg = cfg
	// With --timeout <= 0 every deadline would have passed already: lockctl
	// would call brokers that answer unreachable (exit 3).
	if err := positive("timeout", c.timeout); err != nil {
		return c.report(err)
	}
	return c.report(do(ctx, fs.Args()))
}

// report tells err, unless told already, and returns its exit code. It is
// one line, however many errors err joins (errors.Join puts each on a line
// of its own). A usage error ends with a hint to the command's flags rather
// than all of them, which would bury the error.
func (c *cli) report(err error) int {
	if err != nil && !errors.Is(err, errReported) {
		fmt.Fprintf(c.stderr, "lockctl %s: %s\n", c.cmd, strings.ReplaceAll(err.Error(), "\n", "; "))
		if errors.As(err, new(usageError)) {
			fmt.Fprintf(c.stderr, "run 'lockctl %s -h' for usage\n", c.cmd)
		}
	}
	return exitCode(err)
}

// errReported is an error already told to the user; runErr carries a child's
// exit code.
var errReported = errors.New("reported")

type exitErr struct{ code int }

func (e exitErr) Error() string   { return fmt.Sprintf("exit code %d", e.code) }
func (e exitErr) Is(t error) bool { return t == errReported }

func exitCode(err error) int {
	var ee exitErr
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue), errors.Is(err, client.ErrInvalidRequest), errors.Is(err, client.ErrUnsupportedVersion),
		errors.Is(err, client.ErrInvalidConfig):
		return exitUsage
	case errors.Is(err, client.ErrUnreachable), errors.Is(err, client.ErrNoReply),
		errors.Is(err, client.ErrUndecodableReply): // an answer it cannot read is none: not a refusal
		return exitUnreachable
	}
	return exitRefused
}

// names are the topics of the environment (KAFKA_TOPIC_*, REPLY_TOPIC_PREFIX).
func (c *cli) names() topics.Names { return c.cfg.Topics.Names() }

// kafka returns the seed brokers and the client options (seeds, TLS, SASL).
func (c *cli) kafka() ([]string, []kgo.Opt, error) {
	opts, err := c.cfg.KafkaOpts()
	if err != nil {
		// A mistake of the environment (TLS files, SASL), as FromEnv's.
		return nil, nil, usageError{"environment: " + err.Error()}
	}
	seeds := c.cfg.Kafka.BootstrapServers
	if len(seeds) == 0 {
		seeds = []string{c.cfg.Embedded.Addr}
	}
	return seeds, opts, nil
}

// client is a client that sends commands and hears their answers on its
// reply topic (created when missing).
func (c *cli) client(ctx context.Context) (*client.Client, error) { return c.newClient(ctx, false) }

// reader is a client that only reads the lock state topic (locks, watch
// --lock): it needs no reply topic, nor the right to create one.
func (c *cli) reader(ctx context.Context) (*client.Client, error) { return c.newClient(ctx, true) }

func (c *cli) newClient(ctx context.Context, readOnly bool) (*client.Client, error) {
	seeds, opts, err := c.kafka()
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	requester := c.requester
	if requester == "" && os.Getenv(client.EnvToken) == "" && os.Getenv(client.EnvTokenFile) == "" {
		requester = "lockctl" // else the token names it
	}
	cl, err := client.New(ctx, client.Config{
		Brokers: seeds, KafkaOpts: opts, Requester: requester, Topics: c.names(),
		Namespace: c.namespace, RequestTimeout: c.timeout.d, ReplyTimeout: c.replyTimeout(),
		ReadOnly: readOnly,
		// Revoke is the one administrative operation: the others' tokens
		// claim no more than they need.
		SignAdmin: c.cmd == "revoke",
	})
	return cl, c.timedOut(ctx, err)
}

// timeoutPassed is the cause of the deadline withTimeout sets, and what
// timedOut adds to an error it ended. It is a deadline exceeded, as
// ctx.Err() says, for the errors that carry the cause instead (the client
// joins context.Cause in).
type timeoutPassed struct{ timeout seconds }

func (e timeoutPassed) Error() string      { return fmt.Sprintf("--timeout %s passed first", e.timeout) }
func (timeoutPassed) Is(target error) bool { return target == context.DeadlineExceeded }

// withTimeout bounds ctx by --timeout, whose passing timedOut can then tell
// from other deadlines.
func (c *cli) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, c.timeout.d, timeoutPassed{c.timeout})
}

// timedOut adds to err, from work bounded by ctx (withTimeout), that
// --timeout passed first, when ctx's deadline is what ended it and err does
// not say so already. Brokers
// that hang and a --timeout too short to reach them give the same error
// (both exit 3): the message names the flag that may be to blame. Not every
// deadline error is --timeout's: a dial's own timeout (franz-go's 10 s)
// matches context.DeadlineExceeded too, so ctx's cause decides.
func (c *cli) timedOut(ctx context.Context, err error) error {
	var passed timeoutPassed
	if !errors.As(err, new(timeoutPassed)) && errors.Is(err, context.DeadlineExceeded) && errors.As(context.Cause(ctx), &passed) {
		return fmt.Errorf("%w; %w", err, passed)
	}
	return err
}

// replyTimeout is the client's ReplyTimeout: a third of --timeout, at most
// client.DefaultReplyTimeout (5 s), so that a lost command is sent again
// within --timeout.
func (c *cli) replyTimeout() time.Duration {
	if d := min(c.timeout.d/3, client.DefaultReplyTimeout); d > 0 {
		return d
	}
	return client.DefaultReplyTimeout // as the client's default
}

// seconds is a duration flag that also takes plain seconds, the contract's
// unit. Messages quote it as given (String).
type seconds struct {
	d      time.Duration
	set    bool
	text   string // as given
	zeroed bool   // given as other than 0, but below a nanosecond
}

// String is the value as given, else the default.
func (s seconds) String() string {
	if s.set {
		return s.text
	}
	return s.d.String()
}

func (s *seconds) Set(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return errors.New(`want a duration ("30s", "2m") or a finite number of seconds ("30")`)
		}
		if math.Abs(f) > maxSeconds {
			return fmt.Errorf("%s seconds is out of range (at most %.0f)", v, maxSeconds)
		}
		s.d, s.set, s.text = time.Duration(f*float64(time.Second)), true, v
		s.zeroed = f != 0 && s.d == 0
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return errors.New(`want a duration ("30s", "2m") or seconds ("30")`)
	}
	// A duration's units hold no digit: any but 0 is in its number.
	s.d, s.set, s.text, s.zeroed = d, true, v, d == 0 && strings.ContainsAny(v, "123456789")
	return nil
}

// maxSeconds is the longest time.Duration in seconds, rounded down.
const maxSeconds = float64(math.MaxInt64 / int64(time.Second))

// positive refuses an explicit value <= 0 of a flag whose absence means a
// default (the worker's, or --timeout's): the contract refuses an explicit
// 0, and a 0 would go out as absent.
func positive(name string, s seconds) error {
	if !s.set || s.d > 0 {
		return nil
	}
	why := ""
	if s.zeroed {
		why = "it rounds to 0; "
	}
	return notPositive(name, s.text, why)
}

// positiveCount refuses an explicit --name 0 (or less), as positive does.
func positiveCount(name string, c count) error {
	if c.set && c.n <= 0 {
		return notPositive(name, c.text, "")
	}
	return nil
}

func notPositive(name, given, why string) error {
	return usageError{fmt.Sprintf("--%s %s is not positive (%sleave it out for the default)", name, given, why)}
}

// count is an integer flag that keeps its text as given, for messages.
type count struct {
	n    int
	set  bool
	text string
}

// String is the value as given, else the default.
func (c count) String() string {
	if c.set {
		return c.text
	}
	return strconv.Itoa(c.n)
}

func (c *count) Set(v string) error {
	n, err := strconv.ParseInt(v, 0, strconv.IntSize)
	if err != nil {
		return errors.New("want a whole number")
	}
	c.n, c.set, c.text = int(n), true, v
	return nil
}

func requireFlag(name, v string) error {
	if v == "" {
		return usageError{"--" + name + " is required"}
	}
	return nil
}

func noArgs(args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Sprintf("unexpected arguments %q", args)}
	}
	return nil
}

// safe is s as text output shows a field a requester chose: as is when
// printable, else quoted (strconv.Quote). The contract lets an owner_id
// hold any character but NUL, and owner_metadata's JSON strings raw C1
// controls and bidi overrides: printed raw, one requester's could put
// terminal escapes, or lines of its own, into another's query, locks or
// watch. (--json output is JSON's escaping, which leaves those C1 controls
// and bidi overrides raw: it is for programs, which escape them before they
// show them on a terminal.)
func safe(s string) string {
	if printable(s) {
		return s
	}
	return strconv.Quote(s)
}

// printable is the contract's test of a name people read (lock_name,
// namespace, session_id): UTF-8 of printable characters, space the only
// blank.
func printable(s string) bool {
	return utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0
}

// holderJSONHelp is run's and elect's --json help.
const holderJSONHelp = "print the grant (lock.acquired) or the refusal as JSON on stderr, as acquire --json\n" +
	"prints it on stdout, in place of the \"holding\" or \"leader of\" line (stdout is COMMAND's).\n" +
	"The queue position is not printed; lockctl's other messages (the lease lost, a release not\n" +
	"confirmed, errors) stay text on stderr: the client reports them as errors, not events"

// printEvent writes an event on c.events: its JSON with --json, else
// line(ev).
func (c *cli) printEvent(ev topics.Event, line func(topics.Event) string) {
	if c.json {
		b, _ := ev.Encode()
		fmt.Fprintln(c.events, string(b))
		return
	}
	fmt.Fprintln(c.events, line(ev))
}

// refused prints a refusal's event on c.events with --json (the message
// goes to stderr in any case) and returns err.
func (c *cli) refused(err error) error {
	var e *client.Error
	if c.json && errors.As(err, &e) && e.Event.Type != "" {
		b, _ := e.Event.Encode()
		fmt.Fprintln(c.events, string(b))
	}
	return err
}

// describe is the human form of the lock an event is about. Its "(in …)",
// the lease's remaining time, is expires_at minus the event's occurred_at,
// both the database's clock, as the SDK counts it: this host's clock need
// not agree with it. Only without occurred_at is it counted from this
// host's now.
func describe(ev topics.Event) string {
	li := ev.LockInfo
	if li == nil {
		return "(no lock info)"
	}
	key := topics.LockKey(li.Namespace, li.LockName)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", key, li.Status)
	if li.OwnerID != "" && li.Status != topics.StatusFree {
		fmt.Fprintf(&b, " owner=%s token=%d", safe(li.OwnerID), li.FencingToken)
	}
	if li.SessionID != "" {
		fmt.Fprintf(&b, " session=%s", li.SessionID)
	}
	if li.ExpiresAt != nil && li.Status == topics.StatusAcquired {
		left := time.Until(li.ExpiresAt.Time)
		if !ev.OccurredAt.IsZero() {
			left = li.ExpiresAt.Sub(ev.OccurredAt.Time)
		}
		fmt.Fprintf(&b, " expires=%s (in %s)", li.ExpiresAt.Format(topics.TimeLayout), left.Round(100*time.Millisecond))
	}
	if li.Status != topics.StatusFree {
		fmt.Fprintf(&b, " acquisitions=%d extensions=%d", li.AcquisitionCount, li.ExtensionCount)
	}
	if li.DelayUntil != nil { // nothing is granted before it, free or not
		fmt.Fprintf(&b, " delay_until=%s", li.DelayUntil.Format(topics.TimeLayout))
	}
	if len(li.OwnerMetadata) > 0 {
		fmt.Fprintf(&b, " metadata=%s", safe(string(li.OwnerMetadata)))
	}
	if li.Mode == topics.ModeShared {
		b.WriteString(" mode=shared")
	}
	if li.Limit > 1 {
		fmt.Fprintf(&b, " limit=%d", li.Limit)
	}
	if li.HolderCount > 1 { // a query of a shared lock or a semaphore: every holder
		fmt.Fprintf(&b, " holders=%d", li.HolderCount)
		for _, h := range li.Holders {
			fmt.Fprintf(&b, "\n  %s %s token=%d expires=%s", safe(h.OwnerID), h.Mode, h.FencingToken, h.ExpiresAt.Format(topics.TimeLayout))
			if h.SessionID != "" {
				fmt.Fprintf(&b, " session=%s", h.SessionID)
			}
		}
	}
	return b.String()
}

// precheck validates a command with the contract's own rules before
// lockctl connects anywhere, so bad input is a usage error (exit 2) even
// without a broker.
func (c *cli) precheck(cmd topics.Command) error {
	cmd.Namespace = c.namespace
	if cmd.OwnerID == "" && (cmd.Operation == topics.OpAcquire) {
		cmd.OwnerID = "lockctl" // stands in for the generated owner
	}
	if err := topics.Validate(cmd, ""); err != nil {
		var rej *topics.Rejection
		if errors.As(err, &rej) {
			return usageError{c.flagNamed(rej)}
		}
		return err
	}
	return nil
}

// flagOf is the flag that sets each field with a range.
var flagOf = map[string]string{
	"lease_duration": "lease", "wait_timeout": "wait", "lock_delay": "lock-delay", "max_hold": "max-hold",
	"extension_duration": "by", "max_age_seconds": "max-age", "limit": "limit",
}

// flagNamed is the contract's refusal led by the flag that set the field
// refused, as given: "--lease 1000000h: lease_duration 3600000000 is outside
// 0.1..86400 seconds".
func (c *cli) flagNamed(rej *topics.Rejection) string {
	given := ""
	c.fs.Visit(func(f *flag.Flag) {
		if rej.Field != "" && f.Name == flagOf[rej.Field] {
			given = fmt.Sprintf("--%s %s: ", f.Name, f.Value)
		}
	})
	// No flag given: a value lockctl chose, as run's --lock-delay.
	return given + rej.Message
}

func metadataOpt(s string) ([]client.AcquireOption, error) {
	if s == "" {
		return nil, nil
	}
	if !json.Valid([]byte(s)) {
		return nil, usageError{"--metadata is not valid JSON"}
	}
	return []client.AcquireOption{client.WithMetadata(json.RawMessage(s))}, nil
}
