package topics

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The claims the workers check are read by their exact names, once JSON
// escapes are read; the others are not read. A member twice (any), a
// checked claim's name in another case (as strings.EqualFold folds it), a
// null namespaces claim, a checked claim of the wrong type are refused.
func TestParseTokenClaims(t *testing.T) {
	c, err := ParseTokenClaims([]byte(`{"s\u0075b":"billing","iss":"ci","aud":"locks","exp":1700000000.5,"nbf":"1600000000",` +
		`"namespaces":["","billing"],"admin":true,"iat":"bogus","Groups":1,"groups":[2],"nested":{"a":1,"a":2}}`))
	require.NoError(t, err)
	exp, nbf := time.Unix(1700000000, 5e8), time.Unix(1600000000, 0)
	require.Equal(t, TokenClaims{Subject: "billing", Issuer: "ci", Audience: []string{"locks"}, ExpiresAt: &exp, NotBefore: &nbf,
		Namespaces: []string{"", "billing"}, Admin: true}, c)

	for payload, want := range map[string]TokenClaims{
		`{}`:                                 {},
		`{"namespaces":[]}`:                  {Namespaces: []string{}},
		`{"aud":["a","b"],"exp":null}`:       {Audience: []string{"a", "b"}},
		`{"aud":[],"sub":null,"admin":null}`: {},
	} {
		c, err := ParseTokenClaims([]byte(payload))
		require.NoError(t, err, payload)
		require.Equal(t, want, c, payload)
	}

	for payload, want := range map[string]string{
		`[]`:                                  "the claims are not a JSON object",
		`"sub"`:                               "the claims are not a JSON object",
		`{"sub":"a","sub":"a"}`:               `claim "sub" appears twice`,
		`{"x":1,"x":1}`:                       `claim "x" appears twice`,
		`{"ADMIN":true}`:                      `claim "ADMIN" is not "admin"`,
		`{"namespaces":[],"Namespaces":null}`: `claim "Namespaces" is not "namespaces"`,
		`{"\u017fub":"a"}`:                    `claim "ſub" is not "sub"`,
		`{"nbF":1}`:                           `claim "nbF" is not "nbf"`,
		`{"namespaces":null}`:                 "the namespaces claim is null",
		`{"namespaces":"billing"}`:            `claim "namespaces": json: cannot unmarshal string into Go value of type []string`,
		`{"namespaces":[1]}`:                  `claim "namespaces": json: cannot unmarshal number`,
		`{"admin":"true"}`:                    `claim "admin": json: cannot unmarshal string into Go value of type bool`,
		`{"sub":1}`:                           `claim "sub": json: cannot unmarshal number into Go value of type string`,
		`{"iss":["ci"]}`:                      `claim "iss": json: cannot unmarshal array`,
		`{"aud":{"a":1}}`:                     `claim "aud": invalid type for claim`,
		`{"aud":["a",1]}`:                     `claim "aud": invalid type for claim`,
		`{"exp":"soon"}`:                      `claim "exp": could not parse NumericData`,
		`{"exp":1e400}`:                       `claim "exp": could not convert json number value to float`,
		`{"nbf":true}`:                        `claim "nbf": could not parse NumericData`,
		`{"nbf":1e300}`:                       `claim "nbf": NumericDate 1e+300 is out of range`,
		`{"exp":-1e300}`:                      `claim "exp": NumericDate -1e+300 is out of range`,
		`{"nbf":9223372036800000000}`:         `claim "nbf": NumericDate 9.2233720368e+18 is out of range`,
		`{"nbf":"9223372036800000000"}`:       `claim "nbf": NumericDate 9.2233720368e+18 is out of range`,
	} {
		_, err := ParseTokenClaims([]byte(payload))
		require.ErrorContains(t, err, want, payload)
	}
}
