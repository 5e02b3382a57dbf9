package main

import "testing"

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "512MiB": 512 << 20, "32GiB": 32 << 30, "4G": 4 << 30, "64k": 64 << 10, "-1": -1, "2TB": 2 << 40} {
		got, err := parseBytes(in)
		if err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "1.5G", "-2", "GiB", "99999999T"} {
		if got, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) = %d, want an error", in, got)
		}
	}
	for _, n := range []int64{1024, 512 << 20, 3 << 30, 1000} {
		if got, err := parseBytes(formatBytes(n)); err != nil || got != n {
			t.Errorf("parseBytes(formatBytes(%d)) = %d, %v", n, got, err)
		}
	}
}
