package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"
)

// OpenForTool connects a command-line tool to the bus of bc:
//
//   - with nats.url, to those servers;
//   - with the embedded server and a fixed nats.listen address that
//     answers, to the running klaxon through it;
//   - otherwise it opens the embedded store in data_dir itself, which works
//     only while no klaxon runs on it (the store is locked by the process
//     that runs it: two servers on one store would corrupt it).
func OpenForTool(ctx context.Context, bc Config, log *slog.Logger) (*Bus, error) {
	if !bc.Embedded() {
		return Open(ctx, bc, log)
	}
	if addr := dialAddr(bc.Listen); addr != "" {
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			conn.Close()
			return Open(ctx, Config{URL: "nats://" + addr, Token: bc.Token, Name: "klaxon-tool"}, log)
		}
	}
	b, err := Open(ctx, bc, log)
	if errors.Is(err, ErrDataDirInUse) {
		hint := "give `klaxon run` a fixed nats.listen address (e.g. 127.0.0.1:4222) so that tools connect to it, or stop it"
		if bc.Listen != "" {
			hint = fmt.Sprintf("nats.listen %s does not answer (a port of 0 cannot be reached); use a fixed port, or stop klaxon", bc.Listen)
		}
		return nil, fmt.Errorf("%w: a running klaxon holds the embedded NATS store in %s: %s", err, bc.DataDir, hint)
	}
	return b, err
}

// dialAddr is where a tool reaches the embedded server's listener ("" when
// the port is not fixed); a wildcard host is reached on the loopback.
func dialAddr(listen string) string {
	if listen == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	if p, err := strconv.Atoi(port); err != nil || p == 0 {
		return ""
	}
	return LocalAddr(host, port)
}

// LocalAddr is host:port as a tool on this machine reaches a listener on
// host: a wildcard host ("", 0.0.0.0, ::) is reached on the loopback.
func LocalAddr(host, port string) string {
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}
