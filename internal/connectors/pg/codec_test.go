package pg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func TestParseStartupPacket(t *testing.T) {
	startup := func(version uint32, kv ...string) []byte {
		b := []byte{0, 0, 0, 0}
		b = binary.BigEndian.AppendUint32(b, version)
		for _, s := range kv {
			b = append(b, s...)
			b = append(b, 0)
		}
		b = append(b, 0)
		binary.BigEndian.PutUint32(b, uint32(len(b)))
		return b
	}
	cancel := make([]byte, 16)
	binary.BigEndian.PutUint32(cancel, 16)
	binary.BigEndian.PutUint32(cancel[4:], cancelRequestCode)
	binary.BigEndian.PutUint32(cancel[8:], 42)
	binary.BigEndian.PutUint32(cancel[12:], 7)
	longCancel := make([]byte, 12+300)
	binary.BigEndian.PutUint32(longCancel, uint32(len(longCancel)))
	binary.BigEndian.PutUint32(longCancel[4:], cancelRequestCode)

	tests := []struct {
		name       string
		pkt        []byte
		wantKind   packetKind
		wantParams []param
		wantErr    error
	}{
		{name: "startup 3.0", pkt: startup(pgproto3.ProtocolVersion30, "user", "bob", "database", "db", "options", "-c a=b"),
			wantKind: kindStartup, wantParams: []param{{"user", "bob"}, {"database", "db"}, {"options", "-c a=b"}}},
		{name: "startup 3.2", pkt: startup(pgproto3.ProtocolVersion32, "user", "bob"), wantKind: kindStartup,
			wantParams: []param{{"user", "bob"}}},
		{name: "startup without parameters", pkt: startup(pgproto3.ProtocolVersion30), wantKind: kindStartup},
		{name: "empty value", pkt: startup(pgproto3.ProtocolVersion30, "application_name", ""), wantKind: kindStartup,
			wantParams: []param{{"application_name", ""}}},
		{name: "ssl request", pkt: encodeRequest(sslRequestCode), wantKind: kindSSLRequest},
		{name: "gssenc request", pkt: encodeRequest(gssEncRequestCode), wantKind: kindGSSEncRequest},
		{name: "cancel request", pkt: cancel, wantKind: kindCancelRequest},
		{name: "unknown request code", pkt: encodeRequest(1234<<16 | 1), wantKind: kindUnknownRequest},
		{name: "cancel key too long", pkt: longCancel, wantErr: errBadLength},
		{name: "ssl request with trailing bytes", pkt: append([]byte{0, 0, 0, 9}, append(encodeRequest(sslRequestCode)[4:], 0)...), wantErr: errBadStartup},
		{name: "length word mismatch", pkt: []byte{0, 0, 0, 9, 0, 3, 0, 0}, wantErr: errBadLength},
		{name: "too short", pkt: []byte{0, 0, 0, 7, 0, 3, 0}, wantErr: errBadLength},
		{name: "missing terminator", pkt: []byte{0, 0, 0, 13, 0, 3, 0, 0, 'u', 0, 'b', 0, 'x'}, wantErr: errBadStartup},
		{name: "name with value but no terminator", pkt: []byte{0, 0, 0, 11, 0, 3, 0, 0, 'u', 0, 0}, wantErr: errBadStartup},
		{name: "bytes after terminator", pkt: []byte{0, 0, 0, 10, 0, 3, 0, 0, 0, 'x'}, wantErr: errBadStartup},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parseStartupPacket(tc.pkt)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.kind != tc.wantKind {
				t.Errorf("kind %d, want %d", p.kind, tc.wantKind)
			}
			if len(p.params) != len(tc.wantParams) {
				t.Fatalf("params %v, want %v", p.params, tc.wantParams)
			}
			for i := range p.params {
				if p.params[i] != tc.wantParams[i] {
					t.Errorf("param %d = %v, want %v", i, p.params[i], tc.wantParams[i])
				}
			}
		})
	}
}

// countingReader fails the test if more than max bytes are requested in
// total: the length check must come before the body is read or allocated.
type countingReader struct {
	r    io.Reader
	read int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	return n, err
}

func TestReadStartupPacketLengthCap(t *testing.T) {
	for _, n := range []uint32{0, 4, 7, maxStartupPacket + 1, 1 << 31} {
		hdr := binary.BigEndian.AppendUint32(nil, n)
		cr := &countingReader{r: io.MultiReader(bytes.NewReader(hdr), zeroReader{})}
		_, err := readStartupPacket(cr, nil)
		if !errors.Is(err, errBadLength) {
			t.Errorf("length %d: err %v", n, err)
		}
		if cr.read != 4 {
			t.Errorf("length %d: read %d bytes, want only the length word", n, cr.read)
		}
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestServerReader(t *testing.T) {
	var stream []byte
	stream, _ = (&pgproto3.AuthenticationOk{}).Encode(stream)
	stream, _ = (&pgproto3.ParameterStatus{Name: "a", Value: "b"}).Encode(stream)
	stream, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(stream)
	stream = append(stream, 'X', 'Y') // bytes after ReadyForQuery stay buffered
	r := newServerReader(bytes.NewReader(stream))
	var types []byte
	for i := 0; i < 3; i++ {
		typ, body, raw, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) != 5+len(body) || raw[0] != typ {
			t.Fatalf("raw/body mismatch")
		}
		if _, err := decodeBackend(typ, body); err != nil {
			t.Fatal(err)
		}
		types = append(types, typ)
	}
	if string(types) != "RSZ" {
		t.Errorf("types %q", types)
	}
	if got := r.buffered(); string(got) != "XY" {
		t.Errorf("buffered %q", got)
	}
	big := []byte{'E', 0x10, 0, 0, 0}
	if _, _, _, err := newServerReader(bytes.NewReader(big)).next(); !errors.Is(err, errServerMsgSize) {
		t.Errorf("oversized message: %v", err)
	}
}

func TestDecodeBackendAuth(t *testing.T) {
	tests := []struct {
		name string
		msg  pgproto3.BackendMessage
		want string
	}{
		{"ok", &pgproto3.AuthenticationOk{}, "*pgproto3.AuthenticationOk"},
		{"cleartext", &pgproto3.AuthenticationCleartextPassword{}, "*pgproto3.AuthenticationCleartextPassword"},
		{"md5", &pgproto3.AuthenticationMD5Password{Salt: [4]byte{1, 2, 3, 4}}, "*pgproto3.AuthenticationMD5Password"},
		{"sasl", &pgproto3.AuthenticationSASL{AuthMechanisms: []string{mechSCRAM}}, "*pgproto3.AuthenticationSASL"},
		{"gss", &pgproto3.AuthenticationGSS{}, "*pg.unsupportedAuth"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.msg.Encode(nil)
			if err != nil {
				t.Fatal(err)
			}
			m, err := decodeBackend(b[0], b[5:])
			if err != nil {
				t.Fatal(err)
			}
			if got := typeName(m); got != tc.want {
				t.Errorf("decoded as %s, want %s", got, tc.want)
			}
		})
	}
}

func typeName(v any) string {
	switch v.(type) {
	case *pgproto3.AuthenticationOk:
		return "*pgproto3.AuthenticationOk"
	case *pgproto3.AuthenticationCleartextPassword:
		return "*pgproto3.AuthenticationCleartextPassword"
	case *pgproto3.AuthenticationMD5Password:
		return "*pgproto3.AuthenticationMD5Password"
	case *pgproto3.AuthenticationSASL:
		return "*pgproto3.AuthenticationSASL"
	case *unsupportedAuth:
		return "*pg.unsupportedAuth"
	}
	return "other"
}

func TestPasswordMessage(t *testing.T) {
	b := passwordMessage([]byte("pw"))
	want := []byte{'p', 0, 0, 0, 7, 'p', 'w', 0}
	if !bytes.Equal(b, want) {
		t.Errorf("got %v, want %v", b, want)
	}
	var m pgproto3.PasswordMessage
	if err := m.Decode(b[5:]); err != nil || m.Password != "pw" {
		t.Errorf("pgproto3 decodes %q, %v", m.Password, err)
	}
}

// Fuzz tests for the codec: nothing may panic, allocations are bounded by
// the length checks, and what parses must re-encode consistently.

func FuzzParseStartupPacket(f *testing.F) {
	f.Add(encodeRequest(sslRequestCode))
	f.Add(encodeRequest(gssEncRequestCode))
	f.Add([]byte{0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 1, 0, 0, 0, 2})
	if b, err := encodeStartup(pgproto3.ProtocolVersion30, []param{{"user", "u"}, {"database", "d"}}); err == nil {
		f.Add(b)
	}
	f.Add([]byte{0, 0, 0, 9, 0, 3, 0, 0, 0})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		p, err := parseStartupPacket(pkt)
		if err != nil {
			return
		}
		if len(pkt) > maxStartupPacket {
			t.Fatalf("accepted a %d-byte packet", len(pkt))
		}
		if p.kind == kindStartup {
			// Re-encoding what we parsed must give a packet that parses to
			// the same parameters (order aside, last value of a name wins).
			b, err := encodeStartup(p.version, p.params)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			if len(b) > maxStartupPacket {
				return
			}
			q, err := parseStartupPacket(b)
			if err != nil {
				t.Fatalf("re-parse: %v", err)
			}
			want := map[string]string{}
			for _, kv := range p.params {
				want[kv.key] = kv.value
			}
			if len(q.params) != len(want) {
				t.Fatalf("re-parsed %d params, want %d", len(q.params), len(want))
			}
			for _, kv := range q.params {
				if want[kv.key] != kv.value {
					t.Fatalf("param %q = %q, want %q", kv.key, kv.value, want[kv.key])
				}
			}
		}
	})
}

func FuzzReadStartupPacket(f *testing.F) {
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 47})
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff, 1, 2, 3})
	f.Add([]byte{0x16, 0x03, 0x01, 0x02, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		cr := &countingReader{r: bytes.NewReader(data)}
		p, err := readStartupPacket(cr, nil)
		if cr.read > maxStartupPacket {
			t.Fatalf("read %d bytes", cr.read)
		}
		if err == nil && len(p.raw) != cr.read {
			t.Fatalf("packet of %d bytes from %d read", len(p.raw), cr.read)
		}
		_ = isTLSClientHello(data)
	})
}

func FuzzServerMessages(f *testing.F) {
	for _, m := range []pgproto3.BackendMessage{
		&pgproto3.AuthenticationSASL{AuthMechanisms: []string{mechSCRAM, mechSCRAMPlus}},
		&pgproto3.AuthenticationSASLContinue{Data: []byte("r=abc,s=c2FsdA==,i=4096")},
		&pgproto3.AuthenticationMD5Password{Salt: [4]byte{1, 2, 3, 4}},
		&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "x"},
		&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: []string{"_pq_.a"}},
		&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}},
		&pgproto3.ParameterStatus{Name: "a", Value: "b"},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
	} {
		b, _ := m.Encode(nil)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := newServerReader(bytes.NewReader(stream))
		for {
			typ, body, _, err := r.next()
			if err != nil {
				return
			}
			_, _ = decodeBackend(typ, body)
		}
	})
}

func FuzzParseServerFirst(f *testing.F) {
	f.Add("r=abcdef,s=c2FsdA==,i=4096")
	f.Add("r=abc,s=,i=1")
	f.Add("m=ext,r=a,s=b,i=3")
	f.Add("r=a,s=c2FsdA==,i=99999999999999999999")
	f.Fuzz(func(t *testing.T, s string) {
		nonce, salt, iter, err := parseServerFirst(s)
		if err != nil {
			return
		}
		if nonce == "" || len(salt) == 0 || iter < 1 || iter > maxSCRAMIterations {
			t.Fatalf("accepted %q: %q %x %d", s, nonce, salt, iter)
		}
	})
}
