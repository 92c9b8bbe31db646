package topics

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// TokenClaims are the claims of a requester token (the JWT of the
// authorization header) that the workers check or act on, as
// ParseTokenClaims reads them.
type TokenClaims struct {
	Subject  string   // sub: the requester (SubjectProblem)
	Issuer   string   // iss
	Audience []string // aud: one string or a list of them
	// ExpiresAt and NotBefore are exp and nbf (seconds since 1970, a
	// fraction allowed); nil when absent or null.
	ExpiresAt, NotBefore *time.Time
	// Namespaces limits the lock namespaces the requester may touch ("" is
	// the default namespace). nil: the claim is absent, every namespace;
	// [] allows none.
	Namespaces []string
	// Admin marks requesters that administrative operations require.
	Admin bool
}

// ParseTokenClaims reads a token's claims, b being its payload's JSON
// (what a JWT library hands a claims type's UnmarshalJSON), by the rule of
// the workers, which refuse a token whose claims break it: the Go SDK
// refuses such a token too, rather than send commands never answered.
//
// The claims of TokenClaims are read by their exact names. encoding/json
// alone would match "ADMIN" or "Sub" too and let a later duplicate win, so
// an issuer or a gateway reading the claims by name (as JWT libraries do)
// could see other ones than the workers: a payload with a member twice, or
// with one of these names in another case, is refused. A null namespaces
// claim is refused rather than taken as absent (every namespace): it is
// what a Go issuer writes for a nil slice without omitempty, meaning none.
// A claim of the wrong JSON type is refused; exp, nbf and aud are read as
// golang-jwt reads them (a number in a string too for exp and nbf), as the
// workers read them before this rule was shared. Other claims are not read.
func ParseTokenClaims(b []byte) (TokenClaims, error) {
	members, err := objectMembers(b)
	if err != nil {
		return TokenClaims{}, err
	}
	var c TokenClaims
	var aud claimStrings
	var exp, nbf *numericDate
	read := map[string]any{
		"sub": &c.Subject, "iss": &c.Issuer, "aud": &aud, "exp": &exp, "nbf": &nbf,
		"namespaces": &c.Namespaces, "admin": &c.Admin,
	}
	for name, raw := range members {
		dst, ok := read[name]
		if !ok {
			for known := range read {
				if strings.EqualFold(name, known) {
					return TokenClaims{}, fmt.Errorf("claim %.40q is not %q: claim names are case-sensitive, and a token with both readings is refused", name, known)
				}
			}
			continue
		}
		if name == "namespaces" && string(raw) == "null" {
			return TokenClaims{}, errors.New(`the namespaces claim is null: list the namespaces ([] for none), or leave the claim out for every namespace`)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return TokenClaims{}, fmt.Errorf("claim %q: %w", name, err)
		}
	}
	c.Audience = aud
	c.ExpiresAt, c.NotBefore = exp.time(), nbf.time()
	return c, nil
}

// objectMembers splits a JSON object into its members, refusing one that
// appears twice.
func objectMembers(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("the claims are not a JSON object")
	}
	members := map[string]json.RawMessage{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name := t.(string) // an object's member names are strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		if _, dup := members[name]; dup {
			return nil, fmt.Errorf("claim %.40q appears twice", name)
		}
		members[name] = raw
	}
	return members, nil
}

// numericDate is a JWT NumericDate read as golang-jwt's NumericDate reads
// it, with its error texts, which the workers gave before they read the
// claims here: a JSON number, or a string holding one (encoding/json takes
// it into a json.Number), of seconds since 1970; one beyond int64's
// seconds is refused, which golang-jwt reads overflowed.
type numericDate time.Time

// unixToInternal is what time.Unix adds to its seconds: those from year 1
// to 1970.
const unixToInternal = 62135596800

func (d *numericDate) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("could not parse NumericData: %w", err)
	}
	f, err := n.Float64()
	if err != nil {
		return fmt.Errorf("could not convert json number value to float: %w", err)
	}
	whole, frac := math.Modf(f)
	// Past the seconds Go's time holds (int64's, less the 62,135,596,800
	// from year 1 to 1970 that time.Unix adds) it overflows, golang-jwt's
	// too: an nbf of 1e300 would read as the distant past, valid now.
	if whole > math.MaxInt64-unixToInternal || whole < -(1<<63) {
		return fmt.Errorf("NumericDate %g is out of range", f)
	}
	*d = numericDate(time.Unix(int64(whole), int64(frac*1e9)))
	return nil
}

// time is d as a time, nil for nil (a claim absent or null).
func (d *numericDate) time() *time.Time {
	if d == nil {
		return nil
	}
	t := time.Time(*d)
	return &t
}

// claimStrings is aud read as golang-jwt's ClaimStrings reads it, with its
// error text: a string, or a list of them ([] and null are none).
type claimStrings []string

// errClaimType is golang-jwt's ErrInvalidType text.
var errClaimType = errors.New("invalid type for claim")

func (s *claimStrings) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case nil:
	case string:
		*s = claimStrings{v}
	case []any:
		var list claimStrings
		for _, e := range v {
			e, ok := e.(string)
			if !ok {
				return errClaimType
			}
			list = append(list, e)
		}
		*s = list
	default:
		return errClaimType
	}
	return nil
}
