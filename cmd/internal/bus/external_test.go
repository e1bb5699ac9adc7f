package bus

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/klaxon-dev/klaxon/ingest"
	"github.com/klaxon-dev/klaxon/internal/natslayout"
	"github.com/klaxon-dev/klaxon/internal/testkit"
	"github.com/klaxon-dev/klaxon/internal/winetest"
)

// These tests run a real nats-server binary as a separate process: Debian's
// (apt-get install nats-server, 2.9.10) from PATH, or the one named by
// $KLAXON_NATS_SERVER (e.g. built with
// `go build -o bin/nats-server github.com/nats-io/nats-server/v2`). Without
// one they skip, unless KLAXON_REQUIRE_EXTERNAL=1 makes that a failure.

func natsServerBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("KLAXON_NATS_SERVER"); p != "" {
		return p
	}
	winetest.SkipLinuxProgram(t, "nats-server", "nats-server")
	p, err := exec.LookPath("nats-server")
	if err != nil {
		msg := "nats-server binary not found in PATH (apt-get install nats-server, or set KLAXON_NATS_SERVER)"
		if os.Getenv("KLAXON_REQUIRE_EXTERNAL") == "1" {
			t.Fatal(msg + "; KLAXON_REQUIRE_EXTERNAL=1 requires it")
		}
		t.Skip(msg)
	}
	return p
}

// natsProc is a nats-server process.
type natsProc struct {
	t    *testing.T
	bin  string
	args []string
	port int
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// syncBuffer is a log destination shared by goroutines.
type syncBuffer = testkit.SyncBuffer

func freePort(t *testing.T) int { return testkit.FreePort(t) }

// startNATS runs nats-server with JetStream on a free loopback port and
// the given config file text (may be empty); it is killed at cleanup.
func startNATS(t *testing.T, conf string) *natsProc {
	t.Helper()
	p := newNATS(t, conf)
	p.start()
	return p
}

// newNATS prepares a nats-server process without starting it.
func newNATS(t *testing.T, conf string) *natsProc {
	t.Helper()
	bin := natsServerBinary(t)
	dir := t.TempDir()
	p := &natsProc{t: t, bin: bin, port: freePort(t)}
	p.args = []string{"-js", "-sd", filepath.Join(dir, "store"), "-a", "127.0.0.1", "-p", strconv.Itoa(p.port)}
	if conf != "" {
		cf := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		p.args = append(p.args, "-c", cf)
	}
	t.Cleanup(p.stop)
	return p
}

func (p *natsProc) start() {
	t := p.t
	t.Helper()
	p.out = &syncBuffer{}
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.bin, err)
	}
	p.done = make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port))
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("nats-server exited: %s", p.out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			if strings.Contains(p.out.String(), "Server is ready") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server not ready on %s within 15s: %s", addr, p.out.String())
		}
		time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

func (p *natsProc) stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *natsProc) url(scheme string) string {
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, p.port)
}

var roundTrips int

// roundTrip opens a bus with cfg against the server, checks the layout and
// that a published event comes back.
func roundTrip(t *testing.T, cfg Config) *Bus {
	t.Helper()
	ctx := testContext(t)
	b, err := Open(ctx, cfg, newTestLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { closeBus(t, b) })
	t.Logf("external nats-server version %s", b.NC.ConnectedServerVersion())
	checkLayout(t, b, cfg)
	roundTrips++
	ev := testEvent(1000+roundTrips, "ext-node")
	var committed bool
	ev.Commit = func() { committed = true }
	st := publishAll(t, b, []ingest.Event{ev})
	if st.Published != 1 || !committed {
		t.Fatalf("publish: stats %+v committed %v", st, committed)
	}
	s, err := b.JS.Stream(ctx, natslayout.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, natslayout.EventSubject(ev.Source, ev.Node))
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	got, err := natslayout.DecodeEvent(m.Data)
	if err != nil || got.ID != ev.ID || got.Msg != ev.Msg {
		t.Fatalf("read back %+v, %v", got, err)
	}
	return b
}

func expectOpenFails(t *testing.T, cfg Config, secret string) {
	t.Helper()
	ctx := testContext(t)
	b, err := Open(ctx, cfg, newTestLogger(t))
	if err == nil {
		closeBus(t, b)
		t.Fatal("Open succeeded with bad credentials")
	}
	t.Logf("rejected as expected: %v", err)
	if secret != "" && strings.Contains(err.Error(), secret) {
		t.Errorf("error contains the secret: %v", err)
	}
}

func TestExternalNoAuth(t *testing.T) {
	p := startNATS(t, "")
	b := roundTrip(t, Config{URL: p.url("nats")})
	closeBus(t, b)
	// Opening again with other limits updates the streams in place.
	cfg := Config{URL: p.url("nats"), EventsMaxAge: 12 * time.Hour, EventsMaxBytes: 32 << 20,
		DuplicateWindow: time.Minute, IncidentsMaxAge: 48 * time.Hour}
	b = roundTrip(t, cfg)
	if n := streamMsgs(t, b, natslayout.EventsStream); n != 2 {
		t.Errorf("stream holds %d after the update, want 2", n)
	}
}

// TestExternalConnectRetries opens before the server is up: Open waits
// with back-off and connects once it starts; with no server at all it
// gives up when ctx ends.
func TestExternalConnectRetries(t *testing.T) {
	p := newNATS(t, "")
	ctx, cancel := context.WithTimeout(testContext(t), 500*time.Millisecond)
	defer cancel()
	if _, err := Open(ctx, Config{URL: p.url("nats")}, newTestLogger(t)); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Open with no server = %v, want a deadline error", err)
	}

	type result struct {
		b   *Bus
		err error
	}
	res := make(chan result, 1)
	go func() {
		b, err := Open(testContext(t), Config{URL: p.url("nats")}, newTestLogger(t))
		res <- result{b, err}
	}()
	p.start()
	r := <-res
	if r.err != nil {
		t.Fatalf("Open: %v", r.err)
	}
	t.Logf("external nats-server version %s", r.b.NC.ConnectedServerVersion())
	closeBus(t, r.b)
}

func TestExternalUserPassword(t *testing.T) {
	p := startNATS(t, `authorization { user: "klaxon", password: "s3cret-pw-7731" }`)
	roundTrip(t, Config{URL: p.url("nats"), User: "klaxon", Password: "s3cret-pw-7731"})
	expectOpenFails(t, Config{URL: p.url("nats"), User: "klaxon", Password: "wrong-pw-5519"}, "wrong-pw-5519")
	// A password in the URL is not leaked either.
	expectOpenFails(t, Config{URL: "nats://klaxon:url-pw-8812@127.0.0.1:" + strconv.Itoa(p.port)}, "url-pw-8812")
}

func TestExternalToken(t *testing.T) {
	p := startNATS(t, `authorization { token: "tok-0a9b8c7d" }`)
	roundTrip(t, Config{URL: p.url("nats"), Token: "tok-0a9b8c7d"})
	expectOpenFails(t, Config{URL: p.url("nats"), Token: "tok-wrong-4455"}, "tok-wrong-4455")
}

func TestExternalNKey(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	dir := t.TempDir()
	seedFile := filepath.Join(dir, "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startNATS(t, fmt.Sprintf(`authorization { users: [ { nkey: %q } ] }`, pub))
	roundTrip(t, Config{URL: p.url("nats"), NKeySeedFile: seedFile})

	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	otherFile := filepath.Join(dir, "other.nk")
	if err := os.WriteFile(otherFile, otherSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	expectOpenFails(t, Config{URL: p.url("nats"), NKeySeedFile: otherFile}, string(otherSeed))
}

func TestExternalTLS(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	p := startNATS(t, fmt.Sprintf(`tls {
  cert_file: %q
  key_file: %q
  ca_file: %q
  verify: true
  timeout: 5
}`, pki.serverCert, pki.serverKey, pki.ca))
	roundTrip(t, Config{URL: p.url("tls"), TLS: TLSConfig{CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey}})
	// The server name can be given explicitly (the certificate has localhost).
	roundTrip(t, Config{URL: p.url("tls"), TLS: TLSConfig{CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey, ServerName: "localhost"}})
	// No client certificate: the server refuses.
	expectOpenFails(t, Config{URL: p.url("tls"), TLS: TLSConfig{CAFile: pki.ca}}, "")
	// Unknown CA: the client refuses.
	other := newTestPKI(t, t.TempDir())
	expectOpenFails(t, Config{URL: p.url("tls"), TLS: TLSConfig{CAFile: other.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey}}, "")
}

// TestExternalPublisherSurvivesRestart kills and restarts the server (same
// store, same port) under a running publisher: publishes fail with
// disconnects and are retried; every event ends up stored once (dedup drops
// the re-sends) and is committed in order.
func TestExternalPublisherSurvivesRestart(t *testing.T) {
	p := startNATS(t, "")
	ctx := testContext(t)
	b, err := Open(ctx, Config{URL: p.url("nats")}, newTestLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBus(t, b) })
	t.Logf("external nats-server version %s", b.NC.ConnectedServerVersion())

	const n = 5000
	var mu sync.Mutex
	var order []int
	in := make(chan ingest.Event)
	pub := b.NewPublisher(newTestLogger(t), PublisherOptions{Timeout: 2 * time.Second, RetryInitial: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- pub.Run(ctx, in) }()
	for i := 0; i < n; i++ {
		ev := testEvent(i, fmt.Sprintf("node-%d", i%5))
		ev.Commit = func() { mu.Lock(); order = append(order, i); mu.Unlock() }
		if i == n/2 {
			// Restart the server once half is sent.
			p.stop()
			p.start()
		}
		select {
		case in <- ev:
		case err := <-done:
			t.Fatalf("publisher stopped: %v", err)
		}
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := pub.Stats()
	t.Logf("stats %+v", st)
	mu.Lock()
	defer mu.Unlock()
	if len(order) != n {
		t.Fatalf("%d commits, want %d", len(order), n)
	}
	for i, v := range order {
		if v != i {
			t.Fatalf("commit %d is event %d", i, v)
		}
	}
	if got := streamMsgs(t, b, natslayout.EventsStream); got != n {
		t.Errorf("stream holds %d, want %d", got, n)
	}
	if st.Published+st.Duplicates != n {
		t.Errorf("stats = %+v", st)
	}
}

// testPKI is a CA with a server and a client certificate, PEM files in a dir.
type testPKI struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

func newTestPKI(t *testing.T, dir string) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "klaxon test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	pki := testPKI{ca: filepath.Join(dir, "ca.pem")}
	writePEM(t, pki.ca, "CERTIFICATE", caDER)

	issue := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
			DNSNames:     []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		cf, kf := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(t, cf, "CERTIFICATE", der)
		writePEM(t, kf, "EC PRIVATE KEY", kder)
		return cf, kf
	}
	pki.serverCert, pki.serverKey = issue("server", 2, x509.ExtKeyUsageServerAuth)
	pki.clientCert, pki.clientKey = issue("client", 3, x509.ExtKeyUsageClientAuth)
	return pki
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
