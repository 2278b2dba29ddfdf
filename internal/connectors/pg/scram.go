package pg

// Client side of the password authentication methods: md5 and SCRAM-SHA-256
// (RFC 5802, RFC 7677), with the tls-server-end-point channel binding of
// SCRAM-SHA-256-PLUS, and a cache of SCRAM's derived keys.

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

const (
	mechSCRAM     = "SCRAM-SHA-256"
	mechSCRAMPlus = "SCRAM-SHA-256-PLUS"
	// maxSCRAMIterations bounds the work a hostile server can make the
	// broker do per connection. PostgreSQL's default is 4096.
	maxSCRAMIterations = 10_000_000
	scramNonceLen      = 18 // random bytes, as libpq uses
)

var (
	errSCRAMMessage   = errors.New("malformed SCRAM message from server")
	errSCRAMNonce     = errors.New("server nonce does not extend the client nonce")
	errSCRAMSignature = errors.New("server SCRAM signature does not match")
)

// md5Password computes PostgreSQL's md5 response:
// "md5" + hex(md5(hex(md5(password + user)) + salt)). The caller zeroes it.
func md5Password(user string, password []byte, salt [4]byte) []byte {
	h := md5.New()
	h.Write(password)
	h.Write([]byte(user))
	var inner [md5.Size]byte
	h.Sum(inner[:0])
	var innerHex [2 * md5.Size]byte
	hex.Encode(innerHex[:], inner[:])
	h.Reset()
	h.Write(innerHex[:])
	h.Write(salt[:])
	var outer [md5.Size]byte
	h.Sum(outer[:0])
	out := make([]byte, 3+2*md5.Size)
	copy(out, "md5")
	hex.Encode(out[3:], outer[:])
	clear(inner[:])
	clear(innerHex[:])
	clear(outer[:])
	return out
}

// pbkdf2SHA256 is PBKDF2-HMAC-SHA-256 (RFC 8018) for a single 32-byte
// block, which is all SCRAM-SHA-256 needs. It takes the password as bytes so
// that it can be zeroed afterwards.
func pbkdf2SHA256(password, salt []byte, iter int) []byte {
	prf := hmac.New(sha256.New, password)
	prf.Write(salt)
	prf.Write([]byte{0, 0, 0, 1})
	u := prf.Sum(make([]byte, 0, sha256.Size))
	t := bytes.Clone(u)
	for i := 1; i < iter; i++ {
		prf.Reset()
		prf.Write(u)
		u = prf.Sum(u[:0])
		subtle.XORBytes(t, t, u)
	}
	clear(u)
	return t
}

func hmacSHA256(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// scramKeys are the password-derived SCRAM keys. They are as good as the
// password for logging in to this server, so they are zeroed when dropped.
type scramKeys struct {
	clientKey [sha256.Size]byte
	serverKey [sha256.Size]byte
}

func (k *scramKeys) zero() {
	clear(k.clientKey[:])
	clear(k.serverKey[:])
}

// deriveSCRAMKeys runs the expensive part of SCRAM: SaltedPassword (PBKDF2)
// and the ClientKey and ServerKey HMACs. password is already SASLprep'ed.
func deriveSCRAMKeys(password, salt []byte, iter int) *scramKeys {
	salted := pbkdf2SHA256(password, salt, iter)
	k := &scramKeys{}
	ck := hmacSHA256(salted, []byte("Client Key"))
	sk := hmacSHA256(salted, []byte("Server Key"))
	copy(k.clientKey[:], ck)
	copy(k.serverKey[:], sk)
	clear(salted)
	clear(ck)
	clear(sk)
	return k
}

// scramCache remembers derived SCRAM keys, keyed by an HMAC (under a random
// per-cache key) of the password, the salt and the iteration count. A changed
// password, salt or iteration count gives a different key, so a rotated
// password can never be answered from the cache; entries for old passwords
// age out. The password itself is never stored.
type scramCache struct {
	mu      sync.Mutex
	hashKey [32]byte
	max     int
	entries map[[sha256.Size]byte]*scramKeys
	order   [][sha256.Size]byte // insertion order, for eviction
	// inflight holds, per key being derived, a channel closed when done.
	inflight map[[sha256.Size]byte]chan struct{}
	hits     atomic.Int64
	misses   atomic.Int64
}

func newSCRAMCache(max int) *scramCache {
	c := &scramCache{max: max, entries: make(map[[sha256.Size]byte]*scramKeys), inflight: make(map[[sha256.Size]byte]chan struct{})}
	if _, err := rand.Read(c.hashKey[:]); err != nil {
		panic(fmt.Sprintf("pg: crypto/rand: %v", err))
	}
	return c
}

func (c *scramCache) cacheKey(password, salt []byte, iter int) [sha256.Size]byte {
	m := hmac.New(sha256.New, c.hashKey[:])
	var n [8]byte
	binary.BigEndian.PutUint32(n[:4], uint32(len(salt)))
	binary.BigEndian.PutUint32(n[4:], uint32(iter))
	m.Write(n[:])
	m.Write(salt)
	m.Write(password)
	var k [sha256.Size]byte
	m.Sum(k[:0])
	return k
}

// keys returns the derived keys for password, salt and iter, deriving them
// on a miss. Concurrent misses for the same key wait for one derivation
// (many clients connecting at once after a start or a rotation would
// otherwise each pay PBKDF2). The result is a copy the caller must zero.
func (c *scramCache) keys(password, salt []byte, iter int) *scramKeys {
	if c == nil || c.max <= 0 {
		return deriveSCRAMKeys(password, salt, iter)
	}
	ck := c.cacheKey(password, salt, iter)
	waited := false
	for {
		c.mu.Lock()
		if k, ok := c.entries[ck]; ok {
			cp := *k
			c.mu.Unlock()
			c.hits.Add(1)
			return &cp
		}
		f, busy := c.inflight[ck]
		if !busy || waited {
			break // c.mu still held
		}
		c.mu.Unlock()
		<-f
		waited = true // evicted already (a tiny cache): derive ourselves
	}
	done := make(chan struct{})
	if _, busy := c.inflight[ck]; !busy {
		c.inflight[ck] = done
	}
	c.mu.Unlock()
	c.misses.Add(1)
	k := deriveSCRAMKeys(password, salt, iter)
	stored := *k
	c.mu.Lock()
	if _, ok := c.entries[ck]; !ok {
		for len(c.order) >= c.max {
			old := c.order[0]
			c.order = c.order[1:]
			if e, ok := c.entries[old]; ok {
				e.zero()
				delete(c.entries, old)
			}
		}
		c.entries[ck] = &stored
		c.order = append(c.order, ck)
	} else {
		stored.zero()
	}
	if c.inflight[ck] == done {
		delete(c.inflight, ck)
	}
	c.mu.Unlock()
	close(done)
	return k
}

// scramClient runs one SCRAM-SHA-256 exchange. The GS2 header carries the
// channel binding choice: "n,," (none), "y,," (the client supports channel
// binding but the server did not offer it) or "p=tls-server-end-point,,".
type scramClient struct {
	cache       *scramCache
	password    []byte // SASLprep'ed; owned and zeroed by the caller
	user        string // sent as "n=": PostgreSQL ignores it, libpq sends ""
	mech        string
	gs2Header   string
	cbindData   []byte // tls-server-end-point hash, with PLUS only
	clientNonce string

	clientFirstBare string
	serverFirst     string
	authMessage     []byte
	serverKey       []byte
}

// newSCRAMClient picks the mechanism and channel binding mode.
//
// With PLUS offered and a binding available it uses SCRAM-SHA-256-PLUS.
// Otherwise it uses SCRAM-SHA-256 with "y" on TLS when the server did not
// offer PLUS (which lets a server that does support it detect a stripped
// mechanism list), and "n" without TLS, or when PLUS is offered but the
// certificate's algorithm has no binding: sending "y" to a server that
// offers PLUS would be treated as a downgrade attack.
func newSCRAMClient(mechs []string, onTLS bool, cbind []byte, cbindOK bool) (*scramClient, error) {
	var plus, plain bool
	for _, m := range mechs {
		switch m {
		case mechSCRAMPlus:
			plus = true
		case mechSCRAM:
			plain = true
		}
	}
	c := &scramClient{}
	switch {
	case plus && onTLS && cbindOK:
		c.mech = mechSCRAMPlus
		c.gs2Header = "p=tls-server-end-point,,"
		c.cbindData = cbind
	case plain && onTLS && !plus:
		c.mech = mechSCRAM
		c.gs2Header = "y,,"
	case plain:
		c.mech = mechSCRAM
		c.gs2Header = "n,,"
	default:
		return nil, fmt.Errorf("no supported SASL mechanism among %q", mechs)
	}
	var nonce [scramNonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	c.clientNonce = base64.StdEncoding.EncodeToString(nonce[:])
	return c, nil
}

// clientFirst returns the client-first-message.
func (c *scramClient) clientFirst() []byte {
	c.clientFirstBare = "n=" + c.user + ",r=" + c.clientNonce
	return []byte(c.gs2Header + c.clientFirstBare)
}

// clientFinal consumes the server-first-message and returns the
// client-final-message (the caller zeroes it).
func (c *scramClient) clientFinal(serverFirst []byte) ([]byte, error) {
	c.serverFirst = string(serverFirst)
	nonce, salt, iter, err := parseServerFirst(c.serverFirst)
	if err != nil {
		return nil, err
	}
	if len(nonce) <= len(c.clientNonce) || nonce[:len(c.clientNonce)] != c.clientNonce {
		return nil, errSCRAMNonce
	}
	cbind := append([]byte(c.gs2Header), c.cbindData...)
	withoutProof := "c=" + base64.StdEncoding.EncodeToString(cbind) + ",r=" + nonce
	c.authMessage = []byte(c.clientFirstBare + "," + c.serverFirst + "," + withoutProof)

	keys := c.cache.keys(c.password, salt, iter)
	defer keys.zero()
	storedKey := sha256.Sum256(keys.clientKey[:])
	sig := hmacSHA256(storedKey[:], c.authMessage)
	proof := make([]byte, sha256.Size)
	subtle.XORBytes(proof, keys.clientKey[:], sig)
	c.serverKey = bytes.Clone(keys.serverKey[:])

	out := make([]byte, 0, len(withoutProof)+3+base64.StdEncoding.EncodedLen(len(proof)))
	out = append(out, withoutProof...)
	out = append(out, ",p="...)
	out = base64.StdEncoding.AppendEncode(out, proof)
	clear(storedKey[:])
	clear(sig)
	clear(proof)
	return out, nil
}

// verifyServerFinal checks the server-final-message's signature, which
// proves that the server knows the password too.
func (c *scramClient) verifyServerFinal(serverFinal []byte) error {
	defer c.zero()
	s := string(serverFinal)
	if rest, ok := strings.CutPrefix(s, "e="); ok {
		return fmt.Errorf("server reported SCRAM error %q", rest)
	}
	v, ok := strings.CutPrefix(s, "v=")
	if !ok || c.serverKey == nil {
		return errSCRAMMessage
	}
	if i := strings.IndexByte(v, ','); i >= 0 { // extensions are allowed after v=
		v = v[:i]
	}
	got, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return errSCRAMMessage
	}
	want := hmacSHA256(c.serverKey, c.authMessage)
	defer clear(want)
	if !hmac.Equal(got, want) {
		return errSCRAMSignature
	}
	return nil
}

func (c *scramClient) zero() {
	clear(c.serverKey)
	c.serverKey = nil
}

// parseServerFirst parses "r=<nonce>,s=<salt>,i=<iterations>[,ext...]".
func parseServerFirst(s string) (nonce string, salt []byte, iter int, err error) {
	if len(s) > 0 && s[0] == 'm' {
		return "", nil, 0, fmt.Errorf("%w: mandatory extension", errSCRAMMessage)
	}
	fields := strings.Split(s, ",")
	if len(fields) < 3 {
		return "", nil, 0, errSCRAMMessage
	}
	var ok bool
	if nonce, ok = strings.CutPrefix(fields[0], "r="); !ok || nonce == "" {
		return "", nil, 0, fmt.Errorf("%w: nonce", errSCRAMMessage)
	}
	for _, r := range nonce {
		if r < 0x21 || r > 0x7e || r == ',' {
			return "", nil, 0, fmt.Errorf("%w: nonce", errSCRAMMessage)
		}
	}
	s64, ok := strings.CutPrefix(fields[1], "s=")
	if !ok {
		return "", nil, 0, fmt.Errorf("%w: salt", errSCRAMMessage)
	}
	if salt, err = base64.StdEncoding.DecodeString(s64); err != nil || len(salt) == 0 {
		return "", nil, 0, fmt.Errorf("%w: salt", errSCRAMMessage)
	}
	is, ok := strings.CutPrefix(fields[2], "i=")
	if !ok {
		return "", nil, 0, fmt.Errorf("%w: iteration count", errSCRAMMessage)
	}
	iter, err = strconv.Atoi(is)
	if err != nil || iter < 1 || iter > maxSCRAMIterations {
		return "", nil, 0, fmt.Errorf("%w: iteration count %q out of range", errSCRAMMessage, is)
	}
	return nonce, salt, iter, nil
}

// certificateHash implements RFC 5929's choice of hash for
// tls-server-end-point: the hash of the certificate's signature algorithm
// (for RSA-PSS, the hash in its parameters, as PostgreSQL takes it), and
// SHA-256 for MD5 and SHA-1. Ed25519 signatures have no separate hash and
// no binding (PostgreSQL cannot compute one either).
func certificateHash(cert *x509.Certificate) ([]byte, bool) {
	var h hash.Hash
	switch cert.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1,
		x509.SHA256WithRSA, x509.ECDSAWithSHA256, x509.DSAWithSHA256, x509.SHA256WithRSAPSS:
		h = sha256.New()
	case x509.SHA384WithRSA, x509.ECDSAWithSHA384, x509.SHA384WithRSAPSS:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.ECDSAWithSHA512, x509.SHA512WithRSAPSS:
		h = sha512.New()
	default:
		return nil, false
	}
	h.Write(cert.Raw)
	return h.Sum(nil), true
}
