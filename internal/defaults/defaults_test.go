package defaults

import (
	"testing"
	"time"
)

func TestPositive(t *testing.T) {
	for _, tc := range []struct{ v, want time.Duration }{{0, time.Second}, {-time.Millisecond, time.Second}, {time.Millisecond, time.Millisecond}} {
		if got := Positive(tc.v, time.Second); got != tc.want {
			t.Errorf("Positive(%s, 1s) = %s, want %s", tc.v, got, tc.want)
		}
	}
	if got := Positive(-1, 8); got != 8 {
		t.Errorf("Positive(-1, 8) = %d, want 8", got)
	}
}
