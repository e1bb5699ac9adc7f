package sinks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/klaxon-dev/klaxon/internal/redact"
)

// DefaultRequestTimeout is the default timeout of the HTTP sinks'
// requests (their timeout setting).
const DefaultRequestTimeout = 10 * time.Second

// HTTPError is a non-2xx answer of an HTTP endpoint. Its text names the
// endpoint by scheme and host only, and its body excerpt has the sink's
// secrets scrubbed, so it is safe to log and to put in a dead letter.
type HTTPError struct {
	// Endpoint is scheme://host of the request (never the path or query,
	// which may carry a token).
	Endpoint string
	// Status is the HTTP status code.
	Status int
	// Body is the start of the response body, secrets scrubbed.
	Body string
	// Wait is the server's Retry-After (429 and 503), zero when absent.
	Wait time.Duration
}

// Error implements error.
func (e *HTTPError) Error() string {
	s := fmt.Sprintf("%s: HTTP %d", e.Endpoint, e.Status)
	if e.Body != "" {
		s += ": " + e.Body
	}
	if e.Wait > 0 {
		s += fmt.Sprintf(" (retry after %s)", e.Wait)
	}
	return s
}

// RetryAfter implements RetryAfter.
func (e *HTTPError) RetryAfter() time.Duration { return e.Wait }

// Retryable reports whether a later attempt may succeed: 5xx, 429 and 408.
func (e *HTTPError) Retryable() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

// transportError is a failed HTTP exchange (no answer) with a scrubbed text.
type transportError struct {
	msg     string
	timeout bool
}

func (e *transportError) Error() string { return e.msg }

// Timeout reports whether the exchange timed out.
func (e *transportError) Timeout() bool { return e.timeout }

// HTTPRequest is one request of an HTTP sink.
type HTTPRequest struct {
	Method string
	URL    string
	Header http.Header
	Body   []byte
	// Secrets are scrubbed from every error text (tokens in the URL,
	// header values, keys echoed by the server).
	Secrets []string
}

// DoHTTP sends req and classifies the outcome the way every HTTP sink
// does: 2xx is success (the body is returned); network errors, timeouts,
// 5xx, 408 and 429 are retryable; other statuses are not. Errors never
// contain req.Secrets nor the URL's path, query or user info.
func DoHTTP(ctx context.Context, client *http.Client, req HTTPRequest) (body []byte, retryable bool, err error) {
	if client == nil {
		client = http.DefaultClient
	}
	method := req.Method
	if method == "" {
		method = http.MethodPost
	}
	endpoint := Endpoint(req.URL)
	hr, err := http.NewRequestWithContext(ctx, method, req.URL, bytes.NewReader(req.Body))
	if err != nil {
		return nil, false, &transportError{msg: Scrub(fmt.Sprintf("%s: bad request: %v", endpoint, unwrapURLError(err)), append(req.Secrets, req.URL)...)}
	}
	for k, vs := range req.Header {
		for _, v := range vs {
			hr.Header.Add(k, v)
		}
	}
	resp, err := client.Do(hr)
	if err != nil {
		inner := unwrapURLError(err)
		var ne net.Error
		timeout := errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
		msg := fmt.Sprintf("%s %s: %v", method, endpoint, inner)
		return nil, true, &transportError{msg: Scrub(msg, append(req.Secrets, req.URL)...), timeout: timeout}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return b, false, nil
	}
	he := &HTTPError{
		Endpoint: endpoint,
		Status:   resp.StatusCode,
		Body:     Scrub(Truncate(strings.TrimSpace(string(b)), 300), append(req.Secrets, req.URL)...),
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		he.Wait = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return b, he.Retryable(), he
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Endpoint returns scheme://host of a URL: what errors and logs may show of
// it.
func Endpoint(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "<invalid url>"
	}
	return u.Scheme + "://" + u.Host
}

// ParseRetryAfter reads a Retry-After header: delay seconds or an HTTP
// date. Zero when absent or unreadable.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// Scrub replaces every occurrence of the secrets (and their URL-escaped
// forms) in s with "<secret>". Secrets shorter than 4 bytes are ignored.
func Scrub(s string, secrets ...string) string { return redact.Scrub(s, secrets...) }

// Truncate shortens s to at most n runes, ending with "…" when cut.
func Truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// CheckURL validates an http(s) URL config value; key names it in the
// error, which never repeats the value (it may hold a token).
func CheckURL(key, raw string) error {
	if raw == "" {
		return fmt.Errorf("%s: required", key)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s: not a valid URL", key)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%s: want an http or https URL", key)
	}
	if u.Host == "" {
		return fmt.Errorf("%s: the URL has no host", key)
	}
	return nil
}
