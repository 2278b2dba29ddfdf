// Package pg is the PostgreSQL connector (id "pg"). Clients such as psql,
// pgbench, pgx, lib/pq, JDBC or any libpq program connect to the service's
// listener (TCP, or a unix socket: listenOn names the socket file itself,
// unix:///DIR/.s.PGSQL.PORT, which libpq clients reach with host=DIR
// port=PORT)
// without a password; the connector logs in to the real server with the
// service's credentials and hands the authenticated connection to the
// broker, which relays bytes untouched from then on (with serverPool, a
// final Terminate is held back; see "Server connection reuse"). It is built in, on the
// same SDK interface (sdk/connector/tcp) that plugins use.
//
// # Credentials
//
// Names and defaults match CyberArk Secretless's pg connector:
//
//	host         server host name or address; a value starting with "/" is a
//	             unix socket directory (as in libpq; TLS is never used there)
//	port         default 5432
//	username     the role to log in as (required)
//	password     used for password, md5 and SCRAM-SHA-256 authentication
//	             (without it, a server that asks for one is not sent an
//	             attempt, and the client gets 28P01, as libpq says "no
//	             password supplied")
//	database     optional: fixes the database, whatever the client asks for
//	sslmode      disable, allow, prefer, require (the default), verify-ca,
//	             verify-full, with libpq's semantics (below)
//	sslrootcert  CA certificates to verify the server with, or "system" (the
//	             system's roots; then sslmode defaults to, and must be,
//	             verify-full, as in libpq 16)
//	sslcert      client certificate (with sslkey), for "cert" authentication
//	sslkey       private key of sslcert (unencrypted: an encrypted key is
//	             refused with a hint to decrypt it)
//	sslhost      the name verify-full checks in the server certificate (and
//	             sends as SNI) instead of host
//
// sslrootcert, sslcert and sslkey each hold either PEM contents or a file
// path: a value containing the marker "-----BEGIN" is PEM, any other value
// is the path of a file (surrounding whitespace trimmed) that must itself
// contain PEM data. Files are read anew for every connection, so rotated
// certificates take effect without a restart.
//
// Every other credential is sent to the server as a startup parameter (for
// example application_name, search_path, DateStyle, options), and wins over
// a client's parameter of the same name. The server applies separate
// parameters after options, so a client's work_mem parameter beats
// "-c work_mem=..." in an options credential: give a setting the broker
// must impose as a credential of its own name (work_mem: 64MB). A credential named "user" is
// refused: the role always comes from username. So is, at load time, a name
// one or two edits away from a pg credential ("passwrod", "Password",
// "sslmod"), which would otherwise send its value to the server as a
// startup parameter, and a libpq connection option that is not a startup
// parameter (dbname, hostaddr, channel_binding, connect_timeout,
// sslpassword, sslcrl, target_session_attrs, ...: the server would refuse
// every login), each with what to do instead. username and database may not
// hold a NUL byte; host must be one host name or address without a port, or
// an absolute socket directory.
//
// sslmode follows libpq: disable never encrypts; allow tries plaintext and
// retries with TLS if the server refuses the session; prefer tries TLS
// (plaintext if the server has no TLS, and a retry in plaintext if the
// handshake fails or the server refuses the session); require insists on
// TLS. allow, prefer and require verify the certificate chain only when
// sslrootcert is given (as libpq does when a root certificate file exists).
// verify-ca verifies the chain (against the system roots when sslrootcert is
// not given); verify-full also checks that the certificate names sslhost, or
// host, as libpq checks it: against its DNS names (as text, without regard
// to case; a leading "*." covers exactly one label) and, for an IP host, its
// IP addresses; its Common Name counts only when it has no alternative name
// of the host's kind (no DNS name for a name, no IP address for an IP), so
// that a certificate
// made as PostgreSQL's documentation shows, with a Common Name only, is
// accepted. Any certificate in sslrootcert is a trust anchor: unlike
// libpq (OpenSSL), an intermediate CA given alone is accepted as the root
// of the chain. TLS 1.2 is the minimum, like the server's default. Certificates
// signed with RSA-PSS are verified when the salt is as long as the hash
// (openssl's -sigopt rsa_pss_saltlen:digest); Go cannot verify other salt
// lengths, so such a chain fails to verify (require without sslrootcert
// does not verify the chain and connects).
//
// # Config block
//
// The optional config block offers TLS to clients and sets timeouts:
//
//	config:
//	  tls:                  # offer TLS to clients (SSLRequest and direct TLS)
//	    cert: /etc/broker/pg.crt   # PEM contents or a file path, as above
//	    key: /etc/broker/pg.key
//	    require: false      # true: refuse clients that do not use TLS
//	    minVersion: "1.2"   # or "1.3"
//	  connectTimeout: 5s    # dialing the server, per attempt
//	  handshakeTimeout: 30s # the whole startup, client and server side
//	  scramCacheSize: 64    # derived SCRAM keys kept; 0 disables the cache
//	  serverPool:           # reuse server connections (off unless set)
//	    maxIdle: 10         # idle server connections kept (0: off)
//	    idleTimeout: 1m     # an idle one is closed after this
//	    maxLifetime: 1h     # none is kept or reused once this old
//
// The service's own connectTimeout (beside connector:, default 30s) bounds
// the startup too, from before the credentials are fetched: when it is the
// shorter, the session gives up a little before it (at most 250ms), so the
// client still gets its ErrorResponse (08006, "did not answer in time")
// rather than a bare close.
//
// Unknown keys and bad values stop start-up; the error names the key, as in
// "config.tls.cert: required when tls is set (PEM contents or a file path)".
// The certificate and key are read once, when the service starts.
//
// # Client side
//
// The first packet can be a StartupMessage, an SSLRequest, a GSSENCRequest,
// a CancelRequest, or a TLS ClientHello (PostgreSQL 17's
// sslnegotiation=direct). GSSENCRequest is always answered 'N'; SSLRequest
// is answered 'S' when the config block has tls, 'N' otherwise, and the
// client continues on the same socket. A direct TLS ClientHello is accepted
// when tls is configured (ALPN "postgresql" is required, as PostgreSQL 17
// does) and answered with a TLS handshake_failure alert otherwise. Length
// words out of range are refused before anything is allocated, and bytes
// already waiting behind an SSLRequest (possibly injected, CVE-2021-23214)
// refuse the connection.
//
// Every startup parameter is forwarded except user, which comes from the
// credentials; the database is the database credential, else the client's,
// else the user name (the server's own default). The protocol version is
// forwarded as the client sent it, so 3.0 and 3.2 clients work and the
// server's NegotiateProtocolVersion reaches them. Replication connections
// (replication=true or database) are relayed like any other. The client is
// never asked for a password: it sees AuthenticationOk followed by the
// server's ParameterStatus, BackendKeyData and ReadyForQuery messages.
//
// With client TLS, the connector terminates TLS and relays the decrypted
// stream to the server itself; the connection it returns to the broker is
// one end of a unix socket pair that carries the client's TLS records (so
// a client's half-close travels on, and the broker relays it as a socket).
//
// A client's half-close reaches the server as one; the server's end of the
// session (after a Terminate, pg_terminate_backend, idle_session_timeout, a
// restart) ends it for the client too: the broker closes the client's
// connection as soon as it has relayed the server's last bytes, whether or
// not the client closes its side, as a connection to the server itself
// would be closed. So does a CancelRequest once it has been handled. A
// client that keeps its socket open cannot hold the service's
// maxConnections slot or a descriptor for a session that is over.
//
// # Cancellation
//
// The server's BackendKeyData is relayed to the client unchanged (clients
// need the real process id, for example to recognise their own
// notifications; with serverPool, below, only the secret is replaced),
// and the connector remembers which server (address and TLS settings)
// each key belongs to until the session's server connection closes. The
// keys of all pg services of the broker are in one table, as a PostgreSQL
// server matches a key whatever its session's database or role: so a
// cancel still finds a session that was opened before a reload changed
// its service. A CancelRequest arriving on a new client connection is
// forwarded to that server, over TLS if the session used TLS; one with an
// unknown key is dropped, as PostgreSQL does. Connect then returns a
// connection that reads as end-of-file, so the broker's relay ends as soon
// as the client closes, without logging an error.
//
// # Server side
//
// The connector answers whichever authentication the server asks for:
// trust (including cert), cleartext password, md5, SCRAM-SHA-256, and
// SCRAM-SHA-256-PLUS with tls-server-end-point channel binding on TLS (when
// the certificate's signature algorithm names a hash, RSA-PSS included; not
// for Ed25519, where PostgreSQL cannot bind either). The server's SCRAM
// signature is verified before AuthenticationOk is believed. GSSAPI, SSPI,
// Kerberos and other SASL mechanisms get a FATAL error. SCRAM passwords are
// SASLprep'ed as PostgreSQL does (with RFC 3454's Unicode 3.2 table of
// unassigned code points; NFKC uses newer Unicode tables, as PostgreSQL's).
//
// SCRAM's expensive key derivation (PBKDF2 with the server's salt and
// iteration count) is cached: the ClientKey and ServerKey are stored under
// an HMAC, with a random per-process key, of the password, salt and
// iteration count. A rotated password gives another cache key and is
// never answered from the cache; the password itself is never stored.
// This is what makes reconnecting clients (pgbench -C) faster through the
// broker than directly: libpq pays the derivation on every connection.
// The server's backend start-up remains; serverPool (below) removes that
// too.
//
// # Server connection reuse
//
// Without serverPool, every client connection gets a server session of its
// own, opened for it and closed with it, exactly as a direct connection.
// Opening a session costs the server a new backend process, which bounds
// how many short connections per second any proxy can accept that way
// (measured here: about 250 per second even with trust authentication).
// With serverPool, a session that its client ended cleanly (a Terminate
// sent while the server was idle outside a transaction, every query and
// Sync answered) is reset with DISCARD ALL and kept for up to idleTimeout;
// the next client whose credentials and startup parameters (database,
// application_name, options, protocol version ...) are identical gets it.
// It sees the greeting of a new session (AuthenticationOk, the current
// ParameterStatus values, BackendKeyData, ReadyForQuery) and a session
// state reset by DISCARD ALL: prepared statements, cursors, temporary
// tables, LISTENs, advisory locks and SET values are gone. What remains is
// the backend process itself (pg_backend_pid(), backend_start, its
// statistics, libraries loaded with LOAD or by an extension, with their
// settings, and the name of its temporary schema, pg_my_temp_schema()), and
// session state that DISCARD ALL does not know about:
// extensions' and procedural languages' own (dblink connections, PL/Python
// GD and SD, PL/Perl %_SHARED) and the existence, with an empty value, of
// custom placeholder settings (SET myapp.x). Settings that apply when a
// session starts (ALTER ROLE ... SET, ALTER DATABASE ... SET) and changes
// to the role itself (a new password, NOLOGIN, VALID UNTIL, pg_hba.conf)
// reach a pooled backend only when it is replaced, after maxLifetime at
// the latest. Use serverPool only where that is acceptable. Idle sessions
// count against the server's max_connections; the broker reports how many
// each service holds as secretless_target_connections_idle (connections the
// server has ended, say by a restart, are found and dropped only when one
// is about to be handed out, or at idleTimeout).
//
// The reset also reseeds random() from a random value (DISCARD ALL keeps
// the generator's state, so a setseed would decide the next client's
// numbers), and looks for state that DISCARD ALL leaves and that the end
// of a session would clear: a replication slot the backend holds (a
// temporary one made with pg_create_physical_replication_slot or
// pg_create_logical_replication_slot) and, for roles allowed to use them, a
// replication origin set up for the session; either closes the connection
// instead of keeping it. A backup started with pg_backup_start is stopped
// (the end of the session would abort it). Idle connections that are
// closed (idleTimeout, maxLifetime, a full pool, shutdown) end with a
// Terminate, as a client's session would.
//
// An idle connection is closed at idleTimeout or when it reaches
// maxLifetime, whichever comes first. A full pool makes room for the
// connection just used by closing its longest-idle one (of any key). When
// the server refuses a new session with 53300 (too many connections, for
// the server or the role) while the service holds idle connections, the
// longest-idle one is closed, the broker waits for the server to close its
// end (its slot is free then), and tries once more. When the service stops
// (shutdown, or a reload that changes or removes it), connections whose
// reset is still running are closed once it is done, and the pool keeps
// nothing more.
//
// Sessions ended any other way (EOF without Terminate, an open or failed
// transaction, extended-protocol messages not followed by Sync, a COPY in
// progress) close their server connection as without a pool; an error
// answered with ReadyForQuery outside a transaction does not prevent
// reuse. Replication sessions (the replication startup parameter) and
// sessions whose cancel key was used (the cancel might reach the server
// after the next client started) are never reused either. A pooled connection that the server has ended or
// written to meanwhile (pg_terminate_backend, idle_session_timeout) is
// dropped when it would be handed out. The greeting's ParameterStatus
// values are read from the server after the reset, so changes made by
// ALTER SYSTEM and a reload are reported.
//
// Each client of a reusable connection gets its own random cancel secret
// (with the real process id), which the connector maps to the server's: a
// former client of the same backend cannot cancel a later client's query.
// The pool key is an HMAC, under a random per-process key, of every
// credential value and every startup parameter, so a rotated password is
// never served a connection opened with the old one. Idle connections of
// a service close when the service stops (shutdown, or a reload that
// removes or changes it). With
// serverPool, the relay reads the server connection through the wrapper
// that follows message boundaries, so COPY through such a service is not
// spliced.
//
// # Errors
//
// Every failure reaches the client as one FATAL ErrorResponse, never a
// bare close: the server's own ErrorResponse when it refused the session
// (28P01 wrong password, 3D000 unknown database, 53300 too many
// connections ...), or one the connector writes: 08001 when the server
// cannot be reached, TLS fails or the service is misconfigured, 08006 when
// the server connection breaks during the startup, 08P01 for client
// protocol violations, 0A000 for unsupported protocol versions, 28000 for
// unsupported authentication methods and SCRAM failures. Messages sent to
// the client are prefixed "secretless: " and never contain a credential
// value; the full detail is in the error Connect returns (which the broker
// logs), which names credentials but never includes their values. As a last
// guard, a server message that shows the password is not relayed (the
// client gets "secretless: " and the connector's own text, or "connection
// refused"), and in the returned error the password is replaced by
// [REDACTED], keeping the rest and the SQLSTATE. The password inside the
// session's user or database name does not count: with user and password
// both "devuser", the server's `too many connections for role "devuser"`
// reaches the client as it is.
//
// # Secrets
//
// Passwords stay []byte: the password, md5 digests, SCRAM proofs and keys
// and the encoded messages carrying them are zeroed after use (cached SCRAM
// keys when evicted), and the connector keeps no reference to the
// credential values after Connect returns.
package pg
