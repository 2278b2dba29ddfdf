package relay

import (
	"io"
	"net"
	"testing"
)

// BenchmarkShortSessions: one op is a whole short session through Pipe
// (connect, four small round trips, the target closes), as with clients
// that connect for every few queries; it measures what starting and ending
// a relay costs, with the event loop and with goroutines.
func BenchmarkShortSessions(b *testing.B) {
	for _, loop := range []bool{true, false} {
		b.Run(map[bool]string{true: "loop", false: "goroutines"}[loop], func(b *testing.B) {
			old := loopEnabled
			loopEnabled = loop
			b.Cleanup(func() { loopEnabled = old })
			target := serve(b, func(c net.Conn) {
				buf := make([]byte, 50)
				for range 4 {
					if _, err := io.ReadFull(c, buf[:10]); err != nil {
						break
					}
					_, _ = c.Write(buf)
				}
				_ = c.Close()
			})
			proxy := serve(b, func(c net.Conn) {
				t, err := net.Dial("tcp", target)
				if err != nil {
					_ = c.Close()
					return
				}
				Pipe(c, t)
			})
			buf := make([]byte, 50)
			b.ResetTimer()
			for range b.N {
				c, err := net.Dial("tcp", proxy)
				if err != nil {
					b.Fatal(err)
				}
				for range 4 {
					if _, err := c.Write(buf[:10]); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(c, buf); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := io.ReadAll(c); err != nil {
					b.Fatal(err)
				}
				_ = c.Close()
			}
		})
	}
}

// serve runs handle for every connection to a new loopback listener and
// returns its address.
func serve(b *testing.B, handle func(net.Conn)) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return l.Addr().String()
}
