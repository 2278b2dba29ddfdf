// Package httpproxy is the broker's credential-injecting HTTP forward proxy.
//
// Applications set http_proxy=http://127.0.0.1:PORT (or a proxy URL in their
// client) and send plain requests without credentials. For every request the
// proxy picks the first service (Route) on that listener whose
// authenticateURLsMatching patterns match the absolute request URL, fetches
// the service's credentials, lets its connector (basic_auth, generic_http,
// aws, or any HTTP plugin) decorate the outgoing request, zeroes the
// credentials and streams the request to the target and the response back.
//
// # Safe by default
//
//   - A request that matches no service is refused with 403 and a message
//     naming the URL, unless the listener enables passthroughUnmatched.
//   - A path with a "." or ".." segment (also percent-encoded, twice
//     encoded, with a ";param" or trailing blanks as Java servers strip
//     them, or behind an encoded slash or a backslash) is refused with 400
//     before matching: the
//     target would resolve it, so ^http://h/api/ would otherwise cover
//     /api/../admin. TRACE and TRACK (in any case) are refused with 405: the target would
//     echo the injected credentials back to the client.
//   - Hop-by-hop headers (Connection and the headers it lists, Keep-Alive,
//     TE, Trailer, Transfer-Encoding, Upgrade) and every Proxy-* header are
//     removed before the connector runs, so a client cannot make the proxy
//     drop an injected header through Connection. Forwarded and every X-Forwarded-*
//     are removed too and none are added.
//   - The connector's credential replaces the client's: after the connector
//     runs, more than one Authorization header is an error.
//   - The outgoing Host is the target authority, and nothing the transport
//     adds later touches the headers a connector signed (no Accept-Encoding,
//     no User-Agent).
//   - "Upgrade: h2c" is declined (the request is answered as HTTP/1.1, as
//     RFC 9110 allows): an upgraded HTTP/2 connection would carry requests the
//     connector never sees. "Upgrade: websocket" passes only for services
//     with allowWebSockets; other upgrades are refused.
//   - Errors name no secret: a credential fetch failure is a 502, a connector
//     failure a 500, an unreachable target a 502, a timeout a 504; details go
//     to the log after proxy.Redact.
//
// # CONNECT
//
// Clients send CONNECT for https:// URLs. Inside such a tunnel the bytes are
// TLS between the client and the target, so the proxy can neither see nor
// change the requests: tunnelling them would send them on without
// credentials (or with whatever the client holds), which is what this broker
// exists to prevent. By default CONNECT is therefore answered with
// "405 CONNECT refused: send http:// URLs to this proxy and set forceSSL on
// the service"; the client then sends http:// URLs and the proxy itself
// speaks TLS to the target (verifying it against the system roots plus the
// service's caBundle).
//
// Many clients (AWS SDKs, most CLIs) only speak HTTPS. For them a listener
// can opt in to interception with interceptConnect: {caCert, caKey}, a CA
// that the application trusts. The proxy then answers CONNECT with 200,
// terminates the tunnel's TLS with a certificate it issues for the CONNECT
// host, injects credentials into each request inside, and sends it to
// https://host over a new, verified TLS connection. Bytes the client sent
// right behind the CONNECT request are kept.
//
// # Bodies and connections
//
// Request and response bodies are streamed, never buffered whole (a
// connector such as aws may read a bounded body to hash it when the client
// did not send x-amz-content-sha256). Content-Length: 0 stays 0. Outgoing
// requests whose body was consumed are never retried. Each service has its
// own keep-alive transport (HTTP/1.1, many idle connections per host) and
// timeouts.
//
// # Wiring
//
// For each HTTP service the broker calls ParseConfig on the service's config
// block, passes the returned remainder to the connector's ValidateConfig and
// NewConnector, builds a Route with Config.Route, groups routes by listenOn,
// merges listener-wide keys with ListenerOptions, and runs one Server per
// address with New, Serve and Shutdown.
package httpproxy
