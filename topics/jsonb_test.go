package topics

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

// metadataProblem holds owner_metadata to MaxOwnerMetadataBytes as
// PostgreSQL's jsonb writes it out (what events show): each value below,
// padded with a string member to exactly the limit as PostgreSQL counts it
// (octet_length of its jsonb text), passes, and one byte more is refused,
// with that count. The values: the reviewer's {"a":[1,1,...]}, objects and
// arrays nested and empty, repeated keys (the last value kept; "a" and
// "\u0061" are one key), strings with every kind of escape, numbers of
// every form, whitespace anywhere, and thousands generated at random.
func TestMetadataSizeAsPostgreSQL(t *testing.T) {
	testdb.Require(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testdb.URL())
	require.NoError(t, err)
	defer conn.Close(ctx)
	var encoding string
	require.NoError(t, conn.QueryRow(ctx, `SHOW server_encoding`).Scan(&encoding))
	require.Equal(t, "UTF8", encoding, "jsonb writes non-ASCII text as it is only in a UTF8 database")
	stored := func(values []string) []int {
		t.Helper()
		rows, err := conn.Query(ctx, `SELECT octet_length(v::jsonb::text) FROM unnest($1::text[]) WITH ORDINALITY AS u(v, i) ORDER BY i`, values)
		require.NoError(t, err)
		n, err := pgx.CollectRows(rows, pgx.RowTo[int])
		require.NoError(t, err)
		require.Len(t, n, len(values))
		return n
	}

	reviewers := `{"a":[` + strings.TrimSuffix(strings.Repeat("1,", 2040), ",") + `]}`
	require.Len(t, reviewers, 4087)
	require.Equal(t, []int{6127}, stored([]string{reviewers}))
	require.Contains(t, metadataProblem([]byte(reviewers)), "is 6127 bytes")

	values := []string{
		`{}`, ` { } `, `{"a":[]}`, `{"a":{}}`, `{"a":[[],{},[[{}]]]}`, `{"a" : [ 1 , 2 ] , "b" : { "c" : null } }`,
		`{"a":1,"a":"longer"}`, `{"a":"longer","a":1}`, `{"a":1,"\u0061":2,"b":{"x":1,"x":[1,2,3]}}`,
		`{"s":"\"\\\/\b\f\n\r\t\u0001\u001f\u007f\u0080\u00e9\u2028\ud83d\ude00é😀` + "\x7f" + `"}`,
		`{"n":[0,-0,0.0,-0.0,0e5,0e-5,1e3,1E+3,1e-3,-1.50e1,0.001e2,0.000123e2,12e-1,123.456,1e308,-1e-300,0e-999]}`,
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 3000 {
		var b strings.Builder
		randomJSON(r, &b, 0, true)
		values = append(values, b.String())
	}
	bare := make([]string, len(values))
	for i, v := range values {
		bare[i] = padded(v, 0)
	}
	var at, over []string
	for i, n := range stored(bare) {
		if room := MaxOwnerMetadataBytes - n; room >= 0 { // each x a byte more
			at, over = append(at, padded(values[i], room)), append(over, padded(values[i], room+1))
		}
	}
	require.Greater(t, len(at), len(values)*9/10)
	for i, n := range stored(at) {
		require.Equal(t, MaxOwnerMetadataBytes, n, at[i])
		require.Empty(t, metadataProblem([]byte(at[i])), at[i])
		require.Equal(t, MaxOwnerMetadataBytes, MetadataBytes([]byte(at[i])), at[i])
	}
	want := fmt.Sprintf("is %d bytes as PostgreSQL's jsonb writes it out", MaxOwnerMetadataBytes+1)
	for _, m := range over {
		require.Contains(t, metadataProblem([]byte(m)), want, m)
	}
}

// padded is the JSON object m with a member "~" first whose value is n
// x's (no key of randomJSON's).
func padded(m string, n int) string {
	inner := strings.TrimSpace(m)[1:]
	pad := `{"~":"` + strings.Repeat("x", n) + `"`
	if strings.TrimSpace(inner) == "}" {
		return pad + "}"
	}
	return pad + "," + inner
}

// randomJSON writes a random JSON value that jsonb stores (an object at
// depth 0) with whitespace around its tokens.
func randomJSON(r *rand.Rand, b *strings.Builder, depth int, object bool) {
	space := func() { b.WriteString([]string{"", "", "", " ", "\n\t ", "  "}[r.IntN(6)]) }
	kind := r.IntN(7)
	if object {
		kind = 0
	} else if depth >= 4 && kind < 2 {
		kind = 2 + r.IntN(5)
	}
	switch kind {
	case 0, 1:
		open, close := "{", "}"
		if kind == 1 {
			open, close = "[", "]"
		}
		b.WriteString(open)
		space()
		for i := range r.IntN(5) {
			if i > 0 {
				b.WriteString(",")
				space()
			}
			if kind == 0 {
				// Few keys, some written two ways: repeated keys.
				b.WriteString([]string{`"a"`, `"\u0061"`, `"b"`, `"é"`, `"\u00e9"`, `"q\""`, `""`}[r.IntN(7)])
				space()
				b.WriteString(":")
				space()
			}
			randomJSON(r, b, depth+1, false)
			space()
		}
		b.WriteString(close)
	case 2, 3:
		b.WriteString(`"`)
		pieces := []string{"x", "é", "😀", "\x7f", `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`, `\u0001`, `\u001F`, `\u007f`,
			`\u0080`, `\u00e9`, `\u2028`, `\uFFFD`, `\ud83d\ude00`, `\u0020`, `\u005C`, `\u0022`}
		for range r.IntN(8) {
			b.WriteString(pieces[r.IntN(len(pieces))])
		}
		b.WriteString(`"`)
	case 4, 5:
		if r.IntN(2) == 0 {
			b.WriteString("-")
		}
		if r.IntN(3) == 0 {
			b.WriteString("0")
		} else {
			fmt.Fprint(b, 1+r.IntN(9))
			b.WriteString(digits(r, r.IntN(6)))
		}
		if r.IntN(2) == 0 {
			b.WriteString("." + digits(r, 1+r.IntN(6)))
		}
		if r.IntN(2) == 0 {
			b.WriteString([]string{"e", "E"}[r.IntN(2)] + []string{"", "+", "-"}[r.IntN(3)] + fmt.Sprint(r.IntN(300)))
		}
	default:
		b.WriteString([]string{"true", "false", "null"}[r.IntN(3)])
	}
}

// digits is n random decimal digits, zeros more often than the others.
func digits(r *rand.Rand, n int) string {
	var b strings.Builder
	for range n {
		if r.IntN(3) == 0 {
			b.WriteByte('0')
		} else {
			b.WriteByte(byte('0' + r.IntN(10)))
		}
	}
	return b.String()
}
