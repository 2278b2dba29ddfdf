package pg

import (
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// fakeServer listens on a loopback port and runs handle for every
// connection; it returns the port. Used for server behaviour a real
// PostgreSQL cannot be made to show (no TLS, unsupported auth, forged
// SCRAM signatures, injected bytes ...).
func fakeServer(t testing.TB, handle func(net.Conn)) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return l.Addr().(*net.TCPAddr).Port
}

// noSSLProxy is a server without TLS support in front of the real one: it
// answers N to SSLRequest and relays everything else.
func noSSLProxy(t testing.TB, realPort int) int {
	return fakeServer(t, func(c net.Conn) {
		var first []byte
		for {
			var hdr [8]byte
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			if binary.BigEndian.Uint32(hdr[4:]) == sslRequestCode || binary.BigEndian.Uint32(hdr[4:]) == gssEncRequestCode {
				if _, err := c.Write([]byte{'N'}); err != nil {
					return
				}
				continue
			}
			first = hdr[:]
			break
		}
		up, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(realPort)))
		if err != nil {
			return
		}
		defer up.Close()
		if _, err := up.Write(first); err != nil {
			return
		}
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		_, _ = io.Copy(c, up)
	})
}

// tlsProxy is a TLS-enabled server in front of the real one, which has no
// TLS to it: it answers S to SSLRequest, completes the handshake with
// cert, and relays the decrypted stream. It presents certificates that
// the real server, which has one certificate for all tests, cannot.
func tlsProxy(t testing.TB, realPort int, cert tls.Certificate) int {
	conf := &tls.Config{Certificates: []tls.Certificate{cert}}
	return fakeServer(t, func(c net.Conn) {
		var hdr [8]byte
		for {
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			code := binary.BigEndian.Uint32(hdr[4:])
			if code == gssEncRequestCode {
				if _, err := c.Write([]byte{'N'}); err != nil {
					return
				}
				continue
			}
			if code != sslRequestCode {
				return // this server insists on TLS
			}
			break
		}
		if _, err := c.Write([]byte{'S'}); err != nil {
			return
		}
		tc := tls.Server(c, conf)
		if err := tc.Handshake(); err != nil {
			return
		}
		up, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(realPort)))
		if err != nil {
			return
		}
		defer up.Close()
		go func() { _, _ = io.Copy(up, tc); up.Close() }()
		_, _ = io.Copy(tc, up)
	})
}

// readStartup reads a client's startup packets on a fake server, answering
// encryption requests with N, and returns the StartupMessage packet.
func fakeReadStartup(c net.Conn) (*startupPacket, error) {
	for {
		p, err := readStartupPacket(c, nil)
		if err != nil {
			return nil, err
		}
		if p.kind == kindSSLRequest || p.kind == kindGSSEncRequest {
			if _, err := c.Write([]byte{'N'}); err != nil {
				return nil, err
			}
			continue
		}
		return p, nil
	}
}

func writeMsgs(c net.Conn, msgs ...pgproto3.BackendMessage) error {
	var b []byte
	var err error
	for _, m := range msgs {
		if b, err = m.Encode(b); err != nil {
			return err
		}
	}
	_, err = c.Write(b)
	return err
}

// readFrontendMsg reads one typed frontend message (type, body).
func readFrontendMsg(c net.Conn) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n < 4 || n > 1<<20 {
		return 0, nil, io.ErrUnexpectedEOF
	}
	body := make([]byte, n-4)
	_, err := io.ReadFull(c, body)
	return hdr[0], body, err
}

// drain reads until the peer closes: a fake server that waits for the
// broker to give up.
func drain(c net.Conn) { _, _ = io.Copy(io.Discard, c) }
