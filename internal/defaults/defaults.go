// Package defaults fills in the settings a caller leaves out.
package defaults

// Number is a count, size or duration setting.
type Number interface {
	~int | ~int32 | ~int64 | ~uint32 | ~uint64 | ~float64
}

// Positive returns v when it is above zero, otherwise def: the default of a
// setting that zero (or a negative value) leaves unset.
func Positive[T Number](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}
