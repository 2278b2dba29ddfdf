package pg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

func dialService(t testing.TB, svc *service) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", svc.port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func startupBytes(t testing.TB, version uint32, params ...string) []byte {
	t.Helper()
	var ps []param
	for i := 0; i+1 < len(params); i += 2 {
		ps = append(ps, param{params[i], params[i+1]})
	}
	b, err := encodeStartup(version, ps)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readBackend reads one backend message from a raw connection.
func readBackend(r io.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n, err := serverMessageLen(hdr[:])
	if err != nil {
		return 0, nil, err
	}
	body := make([]byte, n-4)
	_, err = io.ReadFull(r, body)
	return hdr[0], body, err
}

// readErrorResponse expects exactly one ErrorResponse followed by the end
// of the connection.
func readErrorResponse(t testing.TB, r io.Reader) (code, msg string) {
	t.Helper()
	typ, body, err := readBackend(r)
	if err != nil {
		t.Fatalf("reading the error response: %v", err)
	}
	if typ != 'E' {
		t.Fatalf("got message %q, want an ErrorResponse", typ)
	}
	var e pgproto3.ErrorResponse
	if err := e.Decode(body); err != nil {
		t.Fatal(err)
	}
	if e.Severity != "FATAL" {
		t.Errorf("severity %q", e.Severity)
	}
	var one [1]byte
	if n, err := r.Read(one[:]); n != 0 || err == nil {
		t.Errorf("more after the ErrorResponse: %d bytes, %v", n, err)
	}
	return e.Code, e.Message
}

// readUntilReady reads messages up to ReadyForQuery and returns their types.
func readUntilReady(t testing.TB, r io.Reader) (types string, msgs map[byte][][]byte) {
	t.Helper()
	msgs = map[byte][][]byte{}
	for {
		typ, body, err := readBackend(r)
		if err != nil {
			t.Fatalf("after %q: %v", types, err)
		}
		types += string(typ)
		msgs[typ] = append(msgs[typ], body)
		if typ == 'E' {
			var e pgproto3.ErrorResponse
			_ = e.Decode(body)
			t.Fatalf("error response: %s %s", e.Code, e.Message)
		}
		if typ == 'Z' {
			return types, msgs
		}
	}
}

func TestClientProtocol(t *testing.T) {
	srv := needServer(t)
	svc := newService(t, baseCreds(srv, roleSCRAM, "disable"), "")
	v30 := uint32(pgproto3.ProtocolVersion30)

	t.Run("gssenc and ssl requests answered N on the same socket", func(t *testing.T) {
		c := dialService(t, svc)
		for _, code := range []uint32{gssEncRequestCode, sslRequestCode} {
			if _, err := c.Write(encodeRequest(code)); err != nil {
				t.Fatal(err)
			}
			var b [1]byte
			if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'N' {
				t.Fatalf("answer to %d: %q %v", code, b[0], err)
			}
		}
		if _, err := c.Write(startupBytes(t, v30, "user", "x", "database", testDB)); err != nil {
			t.Fatal(err)
		}
		types, _ := readUntilReady(t, c)
		if types[0] != 'R' || !strings.Contains(types, "K") {
			t.Errorf("startup messages %q", types)
		}
		if _, err := c.Write([]byte{'X', 0, 0, 0, 4}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("protocol 3.2 client negotiates down", func(t *testing.T) {
		c := dialService(t, svc)
		if _, err := c.Write(startupBytes(t, pgproto3.ProtocolVersion32, "user", "x", "database", testDB, "_pq_.test_option", "1")); err != nil {
			t.Fatal(err)
		}
		types, msgs := readUntilReady(t, c)
		if !strings.HasPrefix(types, "vR") {
			t.Fatalf("messages %q, want NegotiateProtocolVersion first", types)
		}
		var npv pgproto3.NegotiateProtocolVersion
		if err := npv.Decode(msgs['v'][0]); err != nil {
			t.Fatal(err)
		}
		if npv.NewestMinorProtocol&0xffff != 0 || len(npv.UnrecognizedOptions) != 1 || npv.UnrecognizedOptions[0] != "_pq_.test_option" {
			t.Errorf("NegotiateProtocolVersion %+v", npv)
		}
	})
	errorCases := []struct {
		name     string
		send     []byte
		wantCode string
		wantMsg  string
	}{
		{"length too small", []byte{0, 0, 0, 4, 0, 3, 0, 0}, codeProtocolViolation, "invalid length of startup packet"},
		{"length too large", []byte{0, 0, 0x4e, 0x21, 0, 3, 0, 0}, codeProtocolViolation, "invalid length of startup packet"},
		{"length huge", []byte{0x7f, 0xff, 0xff, 0xff}, codeProtocolViolation, "invalid length of startup packet"},
		{"protocol 2.0", startupBytes(t, 2<<16, "user", "x"), codeFeatureNotSupported, "unsupported frontend protocol 2.0"},
		{"unknown request code", encodeRequest(1234<<16 | 9999), codeFeatureNotSupported, "unsupported frontend protocol 1234.9999"},
		{"bytes pipelined after ssl request", append(encodeRequest(sslRequestCode), startupBytes(t, v30, "user", "x")...),
			codeProtocolViolation, "received unencrypted data after SSL request"},
		{"bytes pipelined after gssenc request", append(encodeRequest(gssEncRequestCode), startupBytes(t, v30, "user", "x")...),
			codeProtocolViolation, "received unencrypted data after GSSAPI encryption request"},
		{"unterminated parameters", []byte{0, 0, 0, 12, 0, 3, 0, 0, 'u', 's', 'e', 'r'}, codeProtocolViolation, "invalid startup packet"},
	}
	for _, tc := range errorCases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialService(t, svc)
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			code, msg := readErrorResponse(t, c)
			if code != tc.wantCode || !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("got %s %q, want %s %q", code, msg, tc.wantCode, tc.wantMsg)
			}
		})
	}
	// PostgreSQL bounds a startup packet at 10000 bytes after its length
	// word (MAX_STARTUP_PACKET_LENGTH): 10004 in all is the largest. The
	// client names the role the broker logs in as, so the packet the broker
	// sends has the same length.
	t.Run("largest startup packet", func(t *testing.T) {
		for _, tc := range []struct {
			total int
			ok    bool
		}{{maxStartupPacket, true}, {maxStartupPacket + 1, false}} {
			base := len(startupBytes(t, v30, "user", roleSCRAM.name, "database", testDB, "application_name", ""))
			pkt := startupBytes(t, v30, "user", roleSCRAM.name, "database", testDB, "application_name", strings.Repeat("a", tc.total-base))
			if len(pkt) != tc.total {
				t.Fatalf("built %d bytes, want %d", len(pkt), tc.total)
			}
			c := dialService(t, svc)
			if _, err := c.Write(pkt); err != nil {
				t.Fatal(err)
			}
			if !tc.ok {
				if code, msg := readErrorResponse(t, c); code != codeProtocolViolation || !strings.Contains(msg, "invalid length of startup packet") {
					t.Errorf("%d bytes: got %s %q", tc.total, code, msg)
				}
				continue
			}
			readUntilReady(t, c)
		}
	})
	t.Run("second ssl request refused", func(t *testing.T) {
		c := dialService(t, svc)
		_, _ = c.Write(encodeRequest(sslRequestCode))
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'N' {
			t.Fatal(b, err)
		}
		_, _ = c.Write(encodeRequest(sslRequestCode))
		if code, _ := readErrorResponse(t, c); code != codeProtocolViolation {
			t.Errorf("code %s", code)
		}
	})
	t.Run("client stalls inside its startup packet", func(t *testing.T) {
		slow := newService(t, baseCreds(srv, roleSCRAM, "disable"), "handshakeTimeout: 300ms")
		c := dialService(t, slow)
		pkt := startupBytes(t, v30, "user", "x", "database", testDB)
		if _, err := c.Write(pkt[:len(pkt)-3]); err != nil {
			t.Fatal(err)
		}
		code, msg := readErrorResponse(t, c)
		if code != codeProtocolViolation || !strings.Contains(msg, "did not send its whole startup packet in time") {
			t.Errorf("got %s %q", code, msg)
		}
	})
	t.Run("client that sends nothing", func(t *testing.T) {
		c := dialService(t, svc)
		c.Close()
		deadline := time.Now().Add(5 * time.Second)
		for svc.lastError() == nil || !errors.Is(svc.lastError(), ErrClientProtocol) {
			if time.Now().After(deadline) {
				t.Fatalf("no error recorded: %v", svc.lastError())
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Run("unknown cancel key is ignored", func(t *testing.T) {
		c := dialService(t, svc)
		var pkt [16]byte
		binary.BigEndian.PutUint32(pkt[0:], 16)
		binary.BigEndian.PutUint32(pkt[4:], cancelRequestCode)
		binary.BigEndian.PutUint32(pkt[8:], 12345)
		binary.BigEndian.PutUint32(pkt[12:], 67890)
		_, _ = c.Write(pkt[:])
		var one [1]byte
		if n, err := c.Read(one[:]); n != 0 || !errors.Is(err, io.EOF) {
			t.Errorf("want EOF, got %d %v", n, err)
		}
	})
}
