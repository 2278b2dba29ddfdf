// Command bareproxy is the reference point of the HTTP benchmark: the
// smallest credential-adding forward proxy one would write with
// httputil.ReverseProxy and the default transport settings (whose idle pool
// keeps 2 connections per host).
package main

import (
	"flag"
	"log"
	"net/http"
	"net/http/httputil"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "listen address")
	header := flag.String("header", "X-Api-Key", "header to add")
	value := flag.String("value", "bench-key", "its value")
	flag.Parse()
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = pr.In.URL
			pr.Out.Host = ""
			pr.Out.Header.Set(*header, *value)
		},
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !r.URL.IsAbs() {
			http.Error(w, "absolute-form request URIs only", http.StatusBadRequest)
			return
		}
		rp.ServeHTTP(w, r)
	})
	log.Printf("listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, h))
}
