package pg

import (
	"bytes"
	"crypto/md5"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
)

// TestSCRAMRFC7677 runs the SCRAM-SHA-256 example exchange of RFC 7677
// section 3.
func TestSCRAMRFC7677(t *testing.T) {
	for _, cache := range []*scramCache{nil, newSCRAMCache(4)} {
		c := &scramClient{
			cache:       cache,
			password:    []byte("pencil"),
			user:        "user",
			mech:        mechSCRAM,
			gs2Header:   "n,,",
			clientNonce: "rOprNGfwEbeRWgbNEkqO",
		}
		if got := string(c.clientFirst()); got != "n,,n=user,r=rOprNGfwEbeRWgbNEkqO" {
			t.Fatalf("client-first %q", got)
		}
		final, err := c.clientFinal([]byte("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"))
		if err != nil {
			t.Fatal(err)
		}
		want := "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
		if string(final) != want {
			t.Fatalf("client-final\n got %s\nwant %s", final, want)
		}
		if err := c.verifyServerFinal([]byte("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")); err != nil {
			t.Fatalf("server-final: %v", err)
		}
	}
}

func TestSCRAMRejectsBadServerSignature(t *testing.T) {
	c := &scramClient{password: []byte("pencil"), user: "user", gs2Header: "n,,", clientNonce: "rOprNGfwEbeRWgbNEkqO"}
	c.clientFirst()
	if _, err := c.clientFinal([]byte("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")); err != nil {
		t.Fatal(err)
	}
	if err := c.verifyServerFinal([]byte("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")); !errors.Is(err, errSCRAMSignature) {
		t.Errorf("forged signature: %v", err)
	}
}

func TestSCRAMCache(t *testing.T) {
	c := newSCRAMCache(2)
	salt := []byte("salt")
	k1 := c.keys([]byte("one"), salt, 4096)
	k1again := c.keys([]byte("one"), salt, 4096)
	if k1.clientKey != k1again.clientKey || c.hits.Load() != 1 || c.misses.Load() != 1 {
		t.Fatalf("second lookup: hits %d misses %d", c.hits.Load(), c.misses.Load())
	}
	// A rotated password, another salt or iteration count: never a hit.
	for _, tc := range []struct {
		pw, salt string
		iter     int
	}{{"two", "salt", 4096}, {"one", "other", 4096}, {"one", "salt", 4097}} {
		before := c.hits.Load()
		k := c.keys([]byte(tc.pw), []byte(tc.salt), tc.iter)
		if c.hits.Load() != before {
			t.Errorf("%+v served from the cache", tc)
		}
		if k.clientKey == k1.clientKey {
			t.Errorf("%+v gave the same key", tc)
		}
		if want := deriveSCRAMKeys([]byte(tc.pw), []byte(tc.salt), tc.iter); want.clientKey != k.clientKey || want.serverKey != k.serverKey {
			t.Errorf("%+v: wrong keys", tc)
		}
	}
	if len(c.entries) != 2 || len(c.order) != 2 {
		t.Errorf("cache holds %d entries, max 2", len(c.entries))
	}
	// The cache does not hold the password.
	for _, e := range c.entries {
		if bytes.Contains(e.clientKey[:], []byte("one")) {
			t.Error("password in the cache")
		}
	}
}

func TestMD5Password(t *testing.T) {
	salt := [4]byte{0x01, 0x02, 0x03, 0x04}
	inner := md5.Sum([]byte("secretalice"))
	outer := md5.Sum(append([]byte(hex.EncodeToString(inner[:])), salt[:]...))
	want := "md5" + hex.EncodeToString(outer[:])
	if got := string(md5Password("alice", []byte("secret"), salt)); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestSCRAMMechanismChoice(t *testing.T) {
	both := []string{mechSCRAMPlus, mechSCRAM}
	plain := []string{mechSCRAM}
	tests := []struct {
		name     string
		mechs    []string
		onTLS    bool
		cbindOK  bool
		wantMech string
		wantGS2  string
	}{
		{"plaintext", plain, false, false, mechSCRAM, "n,,"},
		{"tls with plus", both, true, true, mechSCRAMPlus, "p=tls-server-end-point,,"},
		{"tls without plus offered", plain, true, true, mechSCRAM, "y,,"},
		{"tls, plus offered, no binding for the cert", both, true, false, mechSCRAM, "n,,"},
		{"plus offered without tls", both, false, false, mechSCRAM, "n,,"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := newSCRAMClient(tc.mechs, tc.onTLS, []byte("h"), tc.cbindOK)
			if err != nil {
				t.Fatal(err)
			}
			if c.mech != tc.wantMech || c.gs2Header != tc.wantGS2 {
				t.Errorf("got %s %q, want %s %q", c.mech, c.gs2Header, tc.wantMech, tc.wantGS2)
			}
		})
	}
	if _, err := newSCRAMClient([]string{"SCRAM-SHA-1"}, false, nil, false); err == nil {
		t.Error("accepted SCRAM-SHA-1 only")
	}
}

func TestCertificateHash(t *testing.T) {
	for alg, wantLen := range map[x509.SignatureAlgorithm]int{
		x509.SHA1WithRSA: 32, x509.SHA256WithRSA: 32, x509.ECDSAWithSHA256: 32,
		x509.ECDSAWithSHA384: 48, x509.SHA512WithRSA: 64, x509.PureEd25519: 0, x509.SHA256WithRSAPSS: 32,
		x509.SHA384WithRSAPSS: 48, x509.SHA512WithRSAPSS: 64, x509.UnknownSignatureAlgorithm: 0,
	} {
		h, ok := certificateHash(&x509.Certificate{SignatureAlgorithm: alg, Raw: []byte("der")})
		if len(h) != wantLen || ok != (wantLen > 0) {
			t.Errorf("%v: %d bytes, ok %v", alg, len(h), ok)
		}
	}
}

func TestSASLPrep(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"ascii unchanged", "pencil", "pencil"},
		{"ascii control kept", "a\x01b", "a\x01b"},
		{"nfkc composes", "pa\u0308ss", "p\u00e4ss"},
		{"non-ascii space mapped", "a\u00a0b\u00e9", "a b\u00e9"},
		{"mapped to nothing", "a\u00adb\u00e9", "ab\u00e9"},
		{"ligature", "\ufb01\u00e9", "fi\u00e9"},
		{"prohibited keeps raw", "a\u00e9\u0007", "a\u00e9\u0007"},
		{"private use keeps raw", "a\ue000", "a\ue000"},
		{"invalid utf8 keeps raw", "a\xff\xfe", "a\xff\xfe"},
		{"bidi mixed keeps raw", "a\u05d0", "a\u05d0"},
		{"rtl only", "\u05d0\u05d1", "\u05d0\u05d1"},
		{"unassigned in unicode 3.2 keeps raw", "\ufb01\U0001F600", "\ufb01\U0001F600"},
		{"unicode 4.0 character keeps raw", "\ufb01\u0221", "\ufb01\u0221"},
		{"last range", "\ufb01\U000E0080", "\ufb01\U000E0080"},
		{"assigned in unicode 3.2", "\ufb01\u0220", "fi\u0220"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(saslPrep([]byte(tc.in))); got != tc.want {
				t.Errorf("saslPrep(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func FuzzSASLPrep(f *testing.F) {
	f.Add([]byte("pencil"))
	f.Add([]byte("p\u00e4ss\u00a0"))
	f.Add([]byte{0xff, 0xc3})
	f.Fuzz(func(t *testing.T, pw []byte) {
		out := saslPrep(pw)
		ascii := true
		for _, b := range pw {
			ascii = ascii && b < 0x80
		}
		if ascii && !bytes.Equal(out, pw) {
			t.Fatalf("ascii password changed: %q -> %q", pw, out)
		}
		if len(out) == 0 && len(pw) != 0 {
			t.Fatalf("%q prepared to nothing", pw)
		}
	})
}

// TestSCRAMCacheConcurrentMisses: clients connecting at the same moment
// with the same password share one key derivation, and all get the keys.
func TestSCRAMCacheConcurrentMisses(t *testing.T) {
	c := newSCRAMCache(4)
	salt := []byte("salt")
	want := deriveSCRAMKeys([]byte("pw"), salt, 40960) // slow enough to overlap
	var wg sync.WaitGroup
	bad := make(chan string, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if k := c.keys([]byte("pw"), salt, 40960); k.clientKey != want.clientKey || k.serverKey != want.serverKey {
				bad <- "wrong keys"
			}
		}()
	}
	wg.Wait()
	close(bad)
	for b := range bad {
		t.Error(b)
	}
	if m := c.misses.Load(); m != 1 {
		t.Errorf("%d derivations for one password, want 1", m)
	}
	if h := c.hits.Load(); h != 7 {
		t.Errorf("%d hits, want 7", h)
	}
}
