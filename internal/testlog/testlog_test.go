package testlog

import "testing"

func TestLastLines(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"}, // the final newline is no line of its own
		{"a\nb\nc", 2, "b\nc"},
		{"a\n", 5, "a"},
	} {
		if got := LastLines(c.s, c.n); got != c.want {
			t.Errorf("LastLines(%q, %d) = %q, want %q", c.s, c.n, got, c.want)
		}
	}
}
