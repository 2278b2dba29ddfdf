// Command relay measures the broker's byte relay (internal/relay: read/write,
// switching to splice for bulk runs) against a direct TCP
// connection and against io.Copy (which uses splice(2) between TCP sockets),
// all in the same run, and prints throughput ratios relative to direct.
//
//	go run ./bench/relay [-d 2s] [-rounds 3]
//
// Two workloads: "small" is request/response ping-pong of 64-byte messages
// (what database protocols look like); "bulk" streams 64 MiB one way.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/secretless-broker/secretless-broker/internal/relay"
)

func echo(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// proxy forwards l to target using copyFn for each direction.
func proxy(l net.Listener, target string, mode string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			t, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				return
			}
			if mode == "relay" {
				relay.Pipe(c, t)
				return
			}
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); _, _ = io.Copy(t, c); t.(*net.TCPConn).CloseWrite() }()
			_, _ = io.Copy(c, t)
			wg.Wait()
			c.Close()
			t.Close()
		}()
	}
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pingPong returns messages per second and process CPU per message.
func pingPong(addr string, d time.Duration) (float64, time.Duration) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	msg := make([]byte, 64)
	buf := make([]byte, 64)
	n := 0
	start := time.Now()
	cpu0 := cpuNow()
	for time.Since(start) < d {
		for i := 0; i < 100; i++ {
			if _, err := c.Write(msg); err != nil {
				panic(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				panic(err)
			}
		}
		n += 100
	}
	return float64(n) / time.Since(start).Seconds(), (cpuNow() - cpu0) / time.Duration(n)
}

func bulk(addr string, size int) float64 {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	chunk := make([]byte, 256<<10)
	start := time.Now()
	go func() {
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	if _, err := io.CopyN(io.Discard, c, int64(size)); err != nil {
		panic(err)
	}
	return float64(size) / time.Since(start).Seconds() / (1 << 20)
}

func main() {
	d := flag.Duration("d", 2*time.Second, "duration of each small-message measurement")
	rounds := flag.Int("rounds", 3, "interleaved rounds")
	flag.Parse()
	listen := func() net.Listener {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return l
	}
	el := listen()
	go echo(el)
	addrs := map[string]string{"direct": el.Addr().String()}
	for _, mode := range []string{"relay", "splice"} {
		l := listen()
		go proxy(l, el.Addr().String(), mode)
		addrs[mode] = l.Addr().String()
	}
	modes := []string{"direct", "relay", "splice"}
	small := map[string]float64{}
	cpu := map[string]time.Duration{}
	big := map[string]float64{}
	for r := 0; r < *rounds; r++ {
		for _, m := range modes {
			rate, c := pingPong(addrs[m], *d)
			small[m] += rate / float64(*rounds)
			cpu[m] += c / time.Duration(*rounds)
			big[m] += bulk(addrs[m], 64<<20) / float64(*rounds)
		}
	}
	fmt.Printf("%-10s %14s %8s %16s %12s %8s\n", "mode", "small msg/s", "ratio", "relay CPU/msg", "bulk MiB/s", "ratio")
	for _, m := range modes {
		fmt.Printf("%-10s %14.0f %8.2f %16v %12.0f %8.2f\n", m, small[m], small[m]/small["direct"], cpu[m]-cpu["direct"], big[m], big[m]/big["direct"])
	}
	fmt.Println("relay CPU/msg: process CPU per round trip minus the direct run's (client and echo server run in this process too)")
}
