package topics

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Decode parses and validates one untrusted command record value. It never
// panics. The error, when not nil, is a *Rejection.
//
// It reads the record itself rather than through json.Unmarshal: keys must
// match exactly (encoding/json matches them regardless of case, so "LOCK_NAME"
// could override lock_name), an explicit 0 must differ from an absent field,
// and the version must be judged before any other field's type.
func Decode(value []byte, replyPrefix string) (Command, error) {
	var c Command
	switch {
	case value == nil:
		return c, reject(c, CodeInvalidRequest, "record value is null (a Kafka tombstone); a command is a JSON object")
	case len(value) == 0:
		return c, reject(c, CodeInvalidRequest, "record value is empty; a command is a JSON object")
	case len(value) > MaxRecordBytes:
		// Still answered where it can be: what answers and keys it is read
		// (when it is a JSON object), not judged.
		if len(value) <= maxReadRecordBytes {
			if raw, problem := split(value); problem == "" {
				c.read(raw)
				c = c.answering(replyPrefix)
			}
		}
		return c, reject(c, CodeInvalidRequest, "record value is %d bytes, over the limit of %d", len(value), MaxRecordBytes)
	}
	raw, problem := split(value)
	if problem != "" {
		return c, reject(c, CodeInvalidRequest, "%s", problem)
	}
	// Every field is read before any is judged, so a rejection still carries
	// request_id, operation and reply_to when they could be read.
	problems := c.read(raw)
	// A later version may have changed any other field, so it decides first.
	if c.V > Version {
		return c, reject(c, CodeUnsupportedVersion, "schema version %s is not supported (this worker speaks %d)", truncate(string(raw[fieldIndex["v"]])), Version)
	}
	// Then, as Validate orders them, what decides how the rest is judged
	// (judgedFirst), each unreadable or judged in its turn; then any other
	// field that cannot be read, in the order of fields.
	for _, j := range judgedFirst {
		if p := problems[fieldIndex[j.name]]; p != "" {
			return c, reject(c, CodeInvalidRequest, "%s", p)
		}
		if err := j.judge(c, replyPrefix); err != nil {
			return c, err
		}
	}
	for _, p := range problems {
		if p != "" {
			return c, reject(c, CodeInvalidRequest, "%s", p)
		}
	}
	op, _ := LookupOperation(c.Operation) // known: judged above
	if err := validateRest(c, op, replyPrefix); err != nil {
		return c, err
	}
	// Validate reads 0 (or "") as "absent, use the default"; only Decode
	// can tell that one was written.
	read := op.Fields
	if op.OwnerOptional {
		read = append(read[:len(read):len(read)], "owner_id")
	}
	for _, name := range read {
		i := fieldIndex[name]
		if f := fields[i]; f.positive && present(raw[i]) && f.zero(&c) {
			return c, rejectField(c, f.name, "%s %s is outside %s", f.name, truncate(string(raw[i])), f.rng)
		}
	}
	// The fields the operation does not read are dropped, so that what
	// it ignores changes nothing downstream (a session_id on a release).
	for _, f := range fields {
		if !f.common && !slices.Contains(op.Fields, f.name) {
			f.clear(&c)
		}
	}
	return c, nil
}

// maxReadRecordBytes bounds the values past MaxRecordBytes that are still
// read for what answers their rejection: Kafka's default message.max.bytes
// (1 MiB and a batch's 12 bytes of overhead), so that every value a broker
// with default settings takes uncompressed is answered. Larger ones (sent
// compressed, or to a broker whose limit is raised: the worker fetches
// batches that inflate to 16 MiB) are not parsed at all, so that each costs
// no more than a megabyte's scan.
const maxReadRecordBytes = 1 << 20

// split checks that value is a JSON object and returns the raw value of each
// of its known keys, or why it is not a command.
func split(value []byte) (*[len(fields)][]byte, string) {
	trimmed := bytes.TrimLeft(value, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, "record value is not a JSON object"
	}
	// The scanner below trusts the syntax, so it is checked first.
	if !json.Valid(trimmed) {
		return nil, fmt.Sprintf("not a valid command: %v", json.Unmarshal(trimmed, new(json.RawMessage)))
	}
	var raw [len(fields)][]byte
	splitObject(trimmed, &raw)
	return &raw, ""
}

// answering is what an over-size record's rejection keeps of c: the fields
// that answer it and key its answer (Command.Key), each only where it is
// valid, so that the answer is no larger, and no more refused by
// PostgreSQL or Kafka, than that of a valid command.
func (c Command) answering(replyPrefix string) Command {
	if _, known := LookupOperation(c.Operation); !known {
		c.Operation = ""
	}
	for _, f := range fields {
		if !slices.Contains(answeringFields, f.name) || f.check != nil && f.check(c, replyPrefix) != "" {
			f.clear(&c)
		}
	}
	return c
}

// answeringFields are the fields answering keeps.
var answeringFields = []string{"request_id", "operation", "namespace", "lock_name", "session_id", "reply_to"}

// fieldOf returns the row of fields a key names exactly, or -1 for an
// unknown key (ignored, as the contract says).
func fieldOf(key []byte) int {
	if bytes.IndexByte(key, '\\') >= 0 {
		// "lock\u005fname" is lock_name in JSON; rare, so it may allocate.
		s, ok := unquote(key)
		if !ok {
			return -1
		}
		key = []byte(s)
	}
	if i, ok := fieldIndex[string(key)]; ok {
		return i
	}
	return -1
}

// present reports whether a field was given: null counts as absent, as it
// did with encoding/json.
func present(v []byte) bool { return v != nil && string(v) != "null" }

// read fills c from the raw values of its fields. It returns why each
// unreadable field (by its index in fields) could not be read, "" for the
// others.
func (c *Command) read(raw *[len(fields)][]byte) (problems [len(fields)]string) {
	note := func(i int, format string, args ...any) {
		problems[i] = fields[i].name + " " + fmt.Sprintf(format, args...)
	}
	for i, v := range raw {
		f := fields[i]
		if f.kind == kindJSON {
			if v != nil {
				// Copied as it is (null too, as encoding/json did); Validate
				// judges it for the operations that read it. Its type is
				// judged here, for every operation: a JSON object, or null
				// (absent).
				*f.at(c).(*json.RawMessage) = bytes.Clone(v)
				if present(v) && v[0] != '{' {
					note(i, "must be a JSON object, got %s", truncate(string(v)))
				}
			}
			continue
		}
		if !present(v) {
			continue
		}
		switch f.kind {
		case kindVersion:
			n, err := strconv.Atoi(string(v))
			switch {
			case err == nil:
				*f.at(c).(*int) = n
			case isInteger(v) && v[0] != '-':
				*f.at(c).(*int) = math.MaxInt // past int's range, still a version above 1
			case isInteger(v):
				note(i, "must be 1, got %s", truncate(string(v)))
			default:
				note(i, "must be an integer, got %s", truncate(string(v)))
			}
		case kindText:
			if v[0] != '"' {
				note(i, "must be a string, got %s", truncate(string(v)))
				continue
			}
			s, ok := unquote(v[1 : len(v)-1])
			if !ok {
				// encoding/json would have made it U+FFFD, so two different
				// inputs could name one lock.
				note(i, "is not valid UTF-8 (or holds a lone UTF-16 surrogate escape)")
				continue
			}
			*f.at(c).(*string) = s
		case kindSeconds, kindOptionalSeconds:
			if !isNumber(v) {
				note(i, "must be a number of seconds, got %s", truncate(string(v)))
				continue
			}
			// A number past float64's range reads as ±Inf (strconv's
			// ErrRange): a type error it is not, and the limits judge it
			// only where the operation uses the field. One not 0 but
			// nearer to it than float64's smallest (1e-400) reads as
			// that smallest, of its sign, not as 0, which would mean
			// "not given" (a max_hold of no cap): the limits judge it as
			// the positive or negative number it is.
			x, _ := strconv.ParseFloat(string(v), 64)
			if x == 0 && notZero(v) {
				x = math.Copysign(math.SmallestNonzeroFloat64, x)
			}
			if f.kind == kindSeconds {
				*f.at(c).(*float64) = x
			} else {
				*f.at(c).(**float64) = &x
			}
		case kindCount:
			if !isInteger(v) {
				note(i, "must be an integer, got %s", truncate(string(v)))
				continue
			}
			// Past int's range Atoi gives its bound of the same sign
			// (ErrRange): as for seconds, the limits judge it.
			n, _ := strconv.Atoi(string(v))
			*f.at(c).(*int) = n
		case kindToken:
			n, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil || !isInteger(v) {
				note(i, "must be a 64-bit integer, got %s", truncate(string(v)))
				continue
			}
			*f.at(c).(**int64) = &n
		}
	}
	return problems
}

// splitObject stores the raw value of each known key of the JSON object b in
// raw; a repeated key keeps its last value, as with encoding/json. b must be
// valid JSON (json.Valid), so the scan needs no bounds or syntax checks.
func splitObject(b []byte, raw *[len(fields)][]byte) {
	i := skipSpace(b, 1)
	if b[i] == '}' {
		return
	}
	for {
		end := stringEnd(b, i)
		key := b[i+1 : end-1]
		i = skipSpace(b, skipSpace(b, end)+1) // past the colon
		vend := valueEnd(b, i)
		if f := fieldOf(key); f >= 0 {
			raw[f] = b[i:vend]
		}
		i = skipSpace(b, vend)
		if b[i] == '}' {
			return
		}
		i = skipSpace(b, i+1) // past the comma
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string that starts at b[i].
func stringEnd(b []byte, i int) int {
	for i++; ; i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
}

// valueEnd returns the index just past the value that starts at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for {
			switch b[i] {
			case '"':
				i = stringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\r' && b[i] != '\n' {
		i++
	}
	return i
}

// isNumber reports whether the valid JSON value v is a number.
func isNumber(v []byte) bool { return v[0] == '-' || v[0] >= '0' && v[0] <= '9' }

// notZero reports whether the valid JSON number v is not zero: a digit
// before its exponent is not 0.
func notZero(v []byte) bool {
	if e := bytes.IndexAny(v, "eE"); e >= 0 {
		v = v[:e]
	}
	return bytes.ContainsAny(v, "123456789")
}

// isInteger reports whether the valid JSON value v is a number without
// fraction or exponent.
func isInteger(v []byte) bool {
	return isNumber(v) && bytes.IndexAny(v, ".eE") < 0
}

// unquote decodes the inside of a valid JSON string. Unlike encoding/json it
// refuses invalid UTF-8 and lone surrogate escapes instead of turning them
// into U+FFFD.
func unquote(s []byte) (string, bool) {
	if !utf8.Valid(s) {
		return "", false
	}
	i := bytes.IndexByte(s, '\\')
	if i < 0 {
		return string(s), true
	}
	out := make([]byte, 0, len(s))
	for i >= 0 {
		out = append(out, s[:i]...)
		r, n, ok := escapeAt(s[i:])
		if !ok {
			return "", false
		}
		out = utf8.AppendRune(out, r)
		s = s[i+n:]
		i = bytes.IndexByte(s, '\\')
	}
	return string(append(out, s...)), true
}

// escapeAt decodes the escape at the start of s (s[0] == '\\', valid JSON):
// the rune, the escape's length, and false for a lone UTF-16 surrogate.
func escapeAt(s []byte) (rune, int, bool) {
	switch s[1] {
	case 'b':
		return '\b', 2, true
	case 'f':
		return '\f', 2, true
	case 'n':
		return '\n', 2, true
	case 'r':
		return '\r', 2, true
	case 't':
		return '\t', 2, true
	case 'u':
	default: // '"', '\\', '/'
		return rune(s[1]), 2, true
	}
	r := hex4(s[2:6])
	if !utf16.IsSurrogate(r) {
		return r, 6, true
	}
	// A surrogate is only text as a high one followed by a low one.
	if r >= 0xdc00 || len(s) < 12 || s[6] != '\\' || s[7] != 'u' {
		return 0, 0, false
	}
	r2 := hex4(s[8:12])
	if r2 < 0xdc00 || r2 > 0xdfff {
		return 0, 0, false
	}
	return utf16.DecodeRune(r, r2), 12, true
}

func hex4(h []byte) rune {
	var r rune
	for _, c := range h[:4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		default:
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// metadataProblem says why PostgreSQL's jsonb would refuse the valid JSON m,
// or returns "". Such a value fails its transaction on every retry, so it
// must be refused here: invalid UTF-8 (SQLSTATE 22021), \u0000 (22P05), a
// lone surrogate escape (22P02), and numbers whose exponent numeric cannot
// hold (1e131072, 1e-16384, even 0e-99999: 22003). It also holds m to
// MaxOwnerMetadataBytes as jsonb writes it out, which every event and
// status of the lock shows (jsonbSize): numeric writes numbers out in full
// (1e-999 is 1,001 characters), so a few kilobytes sent could fill them with
// a megabyte, and a space follows every ',' and ':', half as much again
// for a compact value of short items.
func metadataProblem(m []byte) string {
	if !utf8.Valid(m) {
		return "is not valid UTF-8"
	}
	n, problem := jsonbLen(m)
	if problem != "" {
		return problem
	}
	if n > MaxOwnerMetadataBytes {
		return fmt.Sprintf("is %d bytes as PostgreSQL's jsonb writes it out (a space after each , and :, numbers in full: 1e3 as 1000), over the limit of %d",
			n, MaxOwnerMetadataBytes)
	}
	return ""
}

// MetadataBytes is the length of owner_metadata m (valid JSON that jsonb
// stores) as PostgreSQL's jsonb writes it out: what MaxOwnerMetadataBytes
// bounds, which a client judges a value by before sending it.
func MetadataBytes(m []byte) int {
	n, _ := jsonbLen(m)
	return n
}

// jsonbLen measures the valid JSON m with jsonbSize.
func jsonbLen(m []byte) (int, string) {
	var z jsonbSize
	n, _ := z.value(m, skipSpace(m, 0))
	return n, z.problem
}

// jsonbSize measures valid JSON as PostgreSQL's jsonb writes it out
// (JsonbToCString): no whitespace but a space after each ',' and ':', an
// object's last value for a repeated key, strings escaped anew and numbers
// as numeric writes them. problem is the first reason found why jsonb would
// refuse the value instead.
type jsonbSize struct {
	problem string
	// members holds the members of the objects being measured, the
	// innermost's last.
	members []member
}

// member is an object's member: its key, decoded, and its length as jsonb
// writes it ("key": value).
type member struct {
	key  []byte
	size int
}

func (z *jsonbSize) fail(p string) {
	if z.problem == "" {
		z.problem = p
	}
}

// value is the length of the value that starts at m[i], and the index just
// past it.
func (z *jsonbSize) value(m []byte, i int) (n, end int) {
	switch m[i] {
	case '{':
		start := len(z.members)
		for i = skipSpace(m, i+1); m[i] != '}'; i = skipSpace(m, i) {
			if m[i] == ',' {
				i = skipSpace(m, i+1)
			}
			kend := stringEnd(m, i)
			key := m[i+1 : kend-1]
			k := z.stringLen(key)
			var v int
			v, i = z.value(m, skipSpace(m, skipSpace(m, kend)+1)) // past the colon
			z.members = append(z.members, member{key: decoded(key), size: k + 2 + v})
		}
		// A repeated key keeps its last value: after a stable sort by key,
		// the last of each run.
		ms := z.members[start:]
		slices.SortStableFunc(ms, func(a, b member) int { return bytes.Compare(a.key, b.key) })
		n, kept := 2, 0
		for j, mb := range ms {
			if j+1 == len(ms) || !bytes.Equal(ms[j+1].key, mb.key) {
				n, kept = n+mb.size, kept+1
			}
		}
		z.members = z.members[:start]
		return n + 2*max(0, kept-1), i + 1
	case '[':
		n, items := 2, 0
		for i = skipSpace(m, i+1); m[i] != ']'; i = skipSpace(m, i) {
			if m[i] == ',' {
				i = skipSpace(m, i+1)
			}
			var v int
			v, i = z.value(m, i)
			n, items = n+v, items+1
		}
		return n + 2*max(0, items-1), i + 1
	case '"':
		end = stringEnd(m, i)
		return z.stringLen(m[i+1 : end-1]), end
	}
	end = valueEnd(m, i) // true, false, null or a number
	switch v := m[i:end]; {
	case !isNumber(v):
		return len(v), end
	case !metadataNumberOK(v):
		z.fail(fmt.Sprintf("holds the number %s, which is out of range", truncate(string(v))))
		return len(v), end
	default:
		return numericLen(v), end
	}
}

// stringLen is how long jsonb writes out the JSON string whose inside is s
// (escape_json): quoted, '"', '\\' and \b \f \n \r \t escaped in two bytes,
// the other control characters as \u00XX, the rest as UTF-8. It notes what
// jsonb refuses in s.
func (z *jsonbSize) stringLen(s []byte) int {
	n := 2
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			n++ // JSON escapes every '"', '\\' and control character
			continue
		}
		r, k, ok := escapeAt(s[i:])
		switch {
		case !ok:
			z.fail("holds a lone UTF-16 surrogate escape, which is not text")
			return n
		case r == 0:
			z.fail(`holds \u0000, which PostgreSQL's jsonb cannot store`)
		case r == '"' || r == '\\' || r == '\b' || r == '\f' || r == '\n' || r == '\r' || r == '\t':
			n += 2
		case r < ' ':
			n += 6
		default:
			n += utf8.RuneLen(r)
		}
		i += k - 1
	}
	return n
}

// decoded is the text of a JSON string's inside s: s itself when it has no
// escape.
func decoded(s []byte) []byte {
	if bytes.IndexByte(s, '\\') < 0 {
		return s
	}
	t, _ := unquote(s)
	return []byte(t)
}

// numericLen is how long PostgreSQL's numeric writes the JSON number n
// (valid, its exponent under 1000): a minus unless it is zero, the integer
// digits the exponent leaves before the point, without leading zeros (at
// least one), and the fraction's digits less the exponent after it.
func numericLen(n []byte) int {
	exp := 0
	if e := bytes.IndexAny(n, "eE"); e >= 0 {
		exp, _ = strconv.Atoi(strings.TrimPrefix(string(n[e+1:]), "+"))
		n = n[:e]
	}
	minus := n[0] == '-'
	if minus {
		n = n[1:]
	}
	whole, frac, _ := bytes.Cut(n, []byte("."))
	// The zeros before the first other digit (a JSON number's whole part
	// is 0 or has none).
	zeros := len(whole) - len(bytes.TrimLeft(whole, "0"))
	if zeros == len(whole) {
		zeros += len(frac) - len(bytes.TrimLeft(frac, "0"))
	}
	size := 1
	if zeros < len(whole)+len(frac) { // not zero
		size = max(1, len(whole)+exp-zeros)
		if minus {
			size++
		}
	}
	if f := len(frac) - exp; f > 0 {
		size += 1 + f
	}
	return size
}

// metadataNumberOK holds numbers to a float64's range, which every JSON
// reader can parse. A float64 reads 0e-99999 or 1e-20000 as 0, but numeric
// refuses them, so an exponent of 1000 or more is refused too.
func metadataNumberOK(n []byte) bool {
	if e := bytes.IndexAny(n, "eE"); e >= 0 && len(bytes.TrimLeft(n[e+1:], "+-0")) > 3 {
		return false
	}
	_, err := strconv.ParseFloat(string(n), 64)
	return err == nil
}
