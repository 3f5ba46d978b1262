package orphans

import "testing"

func TestParseStat(t *testing.T) {
	for _, c := range []struct {
		in    string
		state byte
		ppid  int
		ok    bool
	}{
		{"123 (sleep) S 45 123 123 0", 'S', 45, true},
		{"123 (a) b) c) Z 7 1 1", 'Z', 7, true},
		{"123 (x y) R 1", 'R', 1, true},
		{"garbage", 0, 0, false},
		{"1 (x) S", 0, 0, false},
	} {
		s, p, ok := parseStat([]byte(c.in))
		if s != c.state || p != c.ppid || ok != c.ok {
			t.Errorf("parseStat(%q) = %c %d %v", c.in, s, p, ok)
		}
	}
}
