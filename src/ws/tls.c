/* tls.c - part 7: TLS over mbedTLS (WS_ENABLE_MBEDTLS), or stubs that refuse politely.
 * Uses ws.h and config.h only: `make check-layers` compiles it alone. */
#include "config.h"

#if WS_ENABLE_MBEDTLS

#include <mbedtls/version.h>
#include <mbedtls/platform.h>
#include <mbedtls/ssl.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/pk.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h> /* the MBEDTLS_ERR_NET_* codes only */
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
#include <psa/crypto.h>
#endif
#include <limits.h>
#if WS__HAVE_OS
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>
#endif

/* Largest plaintext handed to one mbedtls_ssl_write(): one record. */
#define WS__TLS_CHUNK 16384

struct ws_tls_config {
  mbedtls_ssl_config conf;       /* ours (helper-made configs) */
  mbedtls_ssl_config *use;       /* what sessions use: &conf or the app's */
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_x509_crt ca, cert;
  mbedtls_pk_context key;
  int (*entropy_cb)(void *buf, size_t n, void *user);
  void *entropy_user;
  int own, role, insecure;
};

struct ws_tls {
  mbedtls_ssl_context ssl;
  ws_tls_config *cfg;
  ws_tls_io io;         /* the transport (a copy) */
  void *user;           /* its context */
  int fd;               /* ws_tls_new(): the socket; else -1 */
  size_t wpend;         /* plaintext bytes of a write that would-blocked */
  unsigned char want;   /* WS_TLS_WANT_* the last blocked step waits for */
  unsigned char hs_done, io_failed, peer_closed, closed, verify_failed;
  unsigned char ip[16]; /* the host, when an IP literal (IP SAN check) */
  unsigned char ip_len;
  char err[200];
};

static void ws__tls_errtext(int r, char *buf, size_t cap) {
#if defined(MBEDTLS_ERROR_C)
  mbedtls_strerror(r, buf, cap);
#else
  mbedtls_snprintf(buf, cap, "mbedTLS error -0x%04x", (unsigned)-r);
#endif
}

static void ws__tls_seterr(char *err, size_t cap, const char *what, int r) {
  char m[128];
  if (err == NULL || cap == 0) return;
  if (r == 0) {
    mbedtls_snprintf(err, cap, "%s", what);
    return;
  }
  ws__tls_errtext(r, m, sizeof m);
  mbedtls_snprintf(err, cap, "%s: %s", what, m);
}

/* The transport under a session (the BIO): the caller's callbacks, their
 * codes turned into mbedTLS's. A callback that takes or gives nothing with
 * WS_OK on a write is treated as WS_EAGAIN (mbedTLS reads a 0 from send as
 * success); a count past the buffer is a broken transport. */
static int ws__tls_bio_send(void *ctx, const unsigned char *buf, size_t len) {
  ws_tls *t = (ws_tls *)ctx;
  size_t n = 0;
  int rc;
  if (len > INT_MAX) len = INT_MAX;
  rc = t->io.send(t, buf, len, &n, t->user);
  if (rc == WS_OK && n > 0 && n <= len) return (int)n;
  if (rc == WS_EAGAIN || (rc == WS_OK && n == 0)) return MBEDTLS_ERR_SSL_WANT_WRITE;
  t->io_failed = 1;
  return rc == WS_EEOF ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_SEND_FAILED;
}

static int ws__tls_bio_recv(void *ctx, unsigned char *buf, size_t len) {
  ws_tls *t = (ws_tls *)ctx;
  size_t n = 0;
  int rc;
  if (len > INT_MAX) len = INT_MAX;
  rc = t->io.recv(t, buf, len, &n, t->user);
  if (rc == WS_OK && n <= len) return (int)n; /* 0: end of stream */
  if (rc == WS_EAGAIN) return MBEDTLS_ERR_SSL_WANT_READ;
  t->io_failed = 1;
  return rc == WS_EEOF ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_RECV_FAILED;
}

/* An IP literal, without the OS's inet_pton: dotted quad (no leading
 * zeros) or RFC 4291 text (one "::", an IPv4 tail). Returns 4, 16, or 0
 * when s is not one (a host name). */
static int ws__tls_ip4(const char *s, unsigned char o[4]) {
  int k;
  for (k = 0; k < 4; k++) {
    unsigned v = 0;
    int d = 0;
    for (; *s >= '0' && *s <= '9'; s++, d++) {
      if (d > 0 && v == 0) return 0; /* leading zero */
      v = v * 10 + (unsigned)(*s - '0');
      if (v > 255) return 0;
    }
    if (d == 0) return 0;
    o[k] = (unsigned char)v;
    if (k < 3 && *s++ != '.') return 0;
  }
  return *s == '\0' ? 4 : 0;
}

static int ws__tls_hex(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

static int ws__tls_ip(const char *s, unsigned char o[16]) {
  unsigned char w[16];
  int n = 0, gap = -1;
  if (ws__tls_ip4(s, o) == 4) return 4;
  if (s[0] == ':') { /* a leading "::" */
    if (s[1] != ':') return 0;
    gap = 0;
    s += 2;
  }
  while (*s != '\0') {
    const char *q = s;
    unsigned v = 0;
    int h;
    while (q - s < 5 && (h = ws__tls_hex(*q)) >= 0) v = v * 16 + (unsigned)h, q++;
    if (q == s || q - s > 4) return 0;
    if (*q == '.') { /* the last 32 bits as a dotted quad */
      if (n > 12 || ws__tls_ip4(s, w + n) != 4) return 0;
      n += 4;
      break;
    }
    if (n == 16) return 0;
    w[n++] = (unsigned char)(v >> 8);
    w[n++] = (unsigned char)v;
    if (*q == '\0') break;
    if (*q++ != ':') return 0;
    if (*q == ':') {
      if (gap >= 0) return 0;
      gap = n;
      q++;
    } else if (*q == '\0') {
      return 0; /* a trailing single ':' */
    }
    s = q;
  }
  if (gap < 0) {
    if (n != 16) return 0;
    memcpy(o, w, 16);
  } else {
    if (n > 14) return 0;
    memset(o, 0, 16);
    memcpy(o, w, (size_t)gap);
    memcpy(o + 16 - (n - gap), w + gap, (size_t)(n - gap));
  }
  return 16;
}

/* mbedTLS 2.x matches host names against DNS names only: for a URL with
 * an IP literal, an iPAddress entry of the subjectAltName equal to it
 * clears the name mismatch (the chain is still checked). */
static int ws__tls_verify_ip(void *ctx, mbedtls_x509_crt *crt, int depth,
                             uint32_t *flags) {
  ws_tls *t = (ws_tls *)ctx;
  const mbedtls_x509_sequence *s;
  if (depth != 0 || !(*flags & MBEDTLS_X509_BADCERT_CN_MISMATCH)) return 0;
  for (s = &crt->subject_alt_names; s != NULL; s = s->next) {
    if (s->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) &&
        s->buf.len == t->ip_len && s->buf.p != NULL &&
        memcmp(s->buf.p, t->ip, t->ip_len) == 0) {
      *flags &= ~(uint32_t)MBEDTLS_X509_BADCERT_CN_MISMATCH;
      break;
    }
  }
  return 0;
}

/* Loads PEM (or DER) from memory; PEM must be NUL-terminated for mbedTLS,
 * so a copy gets the NUL. */
static int ws__tls_parse(int what, ws_tls_config *tc, const void *data,
                         size_t len, const char *pwd) {
  unsigned char *copy;
  int r;
  copy = (unsigned char *)mbedtls_calloc(1, len + 1);
  if (copy == NULL) return MBEDTLS_ERR_SSL_ALLOC_FAILED;
  memcpy(copy, data, len);
  copy[len] = 0;
  if (len > 0 && copy[len - 1] != 0 && memchr(copy, '-', len) != NULL) len++;
  if (what == 0)
    r = mbedtls_x509_crt_parse(&tc->ca, copy, len);
  else if (what == 1)
    r = mbedtls_x509_crt_parse(&tc->cert, copy, len);
  else
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    r = mbedtls_pk_parse_key(&tc->key, copy, len, (const unsigned char *)pwd,
                             pwd ? strlen(pwd) : 0, mbedtls_ctr_drbg_random,
                             &tc->drbg);
#else
    r = mbedtls_pk_parse_key(&tc->key, copy, len, (const unsigned char *)pwd,
                             pwd ? strlen(pwd) : 0);
#endif
  mbedtls_free(copy);
  return r;
}

/* A file, where mbedTLS can read files (MBEDTLS_FS_IO); else the file
 * options fail and the *_pem ones remain. */
static int ws__tls_parse_file(int what, ws_tls_config *tc, const char *file,
                              const char *pwd) {
#if defined(MBEDTLS_FS_IO)
  if (what == 0) return mbedtls_x509_crt_parse_file(&tc->ca, file);
  if (what == 1) return mbedtls_x509_crt_parse_file(&tc->cert, file);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
  return mbedtls_pk_parse_keyfile(&tc->key, file, pwd, mbedtls_ctr_drbg_random,
                                  &tc->drbg);
#else
  return mbedtls_pk_parse_keyfile(&tc->key, file, pwd);
#endif
#else
  (void)what, (void)tc, (void)file, (void)pwd;
  return MBEDTLS_ERR_X509_FEATURE_UNAVAILABLE;
#endif
}

static int ws__tls_psa_init(void) {
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
  return psa_crypto_init() == PSA_SUCCESS ? 0 : -1;
#else
  return 0;
#endif
}

/* The caller's entropy source, as an mbedTLS strong source. */
static int ws__tls_entropy(void *ctx, unsigned char *out, size_t len,
                           size_t *olen) {
  ws_tls_config *tc = (ws_tls_config *)ctx;
  *olen = 0;
  if (tc->entropy_cb(out, len, tc->entropy_user) != WS_OK)
    return MBEDTLS_ERR_ENTROPY_SOURCE_FAILED;
  *olen = len;
  return 0;
}

/* see ws.h */
void ws_tls_options_init(ws_tls_options *o, int role) {
  memset(o, 0, sizeof *o);
  o->role = role;
}

/* see ws.h */
int ws_tls_config_new(ws_tls_config **out, const ws_tls_options *o,
                      char *err, size_t errcap) {
#if WS__HAVE_OS && defined(MBEDTLS_FS_IO)
  static const char *bundles[] = {"/etc/ssl/certs/ca-certificates.crt",
                                  "/etc/pki/tls/certs/ca-bundle.crt",
                                  "/etc/ssl/cert.pem", NULL};
  int i;
#endif
  static const char pers[] = "ws_tls";
  ws_tls_config *tc;
  int r;
  if (err && errcap) err[0] = '\0';
  if (out == NULL || o == NULL || (o->role != WS_SERVER && o->role != WS_CLIENT)) {
    ws__tls_seterr(err, errcap, "bad arguments", 0);
    return WS_EINVAL;
  }
  *out = NULL;
  if (ws__tls_psa_init() != 0) {
    ws__tls_seterr(err, errcap, "psa_crypto_init failed", 0);
    return WS_EIO;
  }
  tc = (ws_tls_config *)mbedtls_calloc(1, sizeof *tc);
  if (tc == NULL) return WS_ENOMEM;
  tc->own = 1;
  tc->role = o->role;
  tc->insecure = o->role == WS_CLIENT && o->insecure_skip_verify;
  tc->use = &tc->conf;
  mbedtls_ssl_config_init(&tc->conf);
  mbedtls_entropy_init(&tc->entropy);
  mbedtls_ctr_drbg_init(&tc->drbg);
  mbedtls_x509_crt_init(&tc->ca);
  mbedtls_x509_crt_init(&tc->cert);
  mbedtls_pk_init(&tc->key);
  if (o->entropy != NULL) {
    tc->entropy_cb = o->entropy;
    tc->entropy_user = o->entropy_user;
    r = mbedtls_entropy_add_source(&tc->entropy, ws__tls_entropy, tc, 32,
                                   MBEDTLS_ENTROPY_SOURCE_STRONG);
    if (r != 0) {
      ws__tls_seterr(err, errcap, "entropy source", r);
      goto fail;
    }
  }
  r = mbedtls_ctr_drbg_seed(&tc->drbg, mbedtls_entropy_func, &tc->entropy,
                            (const unsigned char *)pers, sizeof pers - 1);
  if (r != 0) {
    ws__tls_seterr(err, errcap, o->entropy ? "random generator"
                       : "random generator (no entropy: set ws_tls_options.entropy)", r);
    goto fail;
  }
  r = mbedtls_ssl_config_defaults(&tc->conf,
                                  o->role == WS_SERVER ? MBEDTLS_SSL_IS_SERVER
                                                       : MBEDTLS_SSL_IS_CLIENT,
                                  MBEDTLS_SSL_TRANSPORT_STREAM,
                                  MBEDTLS_SSL_PRESET_DEFAULT);
  if (r != 0) {
    ws__tls_seterr(err, errcap, "TLS defaults", r);
    goto fail;
  }
  mbedtls_ssl_conf_rng(&tc->conf, mbedtls_ctr_drbg_random, &tc->drbg);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
  mbedtls_ssl_conf_min_tls_version(&tc->conf, MBEDTLS_SSL_VERSION_TLS1_2);
#else
  mbedtls_ssl_conf_min_version(&tc->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                               MBEDTLS_SSL_MINOR_VERSION_3);
#if defined(MBEDTLS_ECP_C)
  /* 2.x prefers its largest curves (P-521 first), which doubles the cost
   * of a handshake for no gain: the fast, common ones first (3.x does
   * this by default). */
  {
    static const mbedtls_ecp_group_id ws__tls_curves[] = {
#if defined(MBEDTLS_ECP_DP_CURVE25519_ENABLED)
        MBEDTLS_ECP_DP_CURVE25519,
#endif
#if defined(MBEDTLS_ECP_DP_SECP256R1_ENABLED)
        MBEDTLS_ECP_DP_SECP256R1,
#endif
#if defined(MBEDTLS_ECP_DP_SECP384R1_ENABLED)
        MBEDTLS_ECP_DP_SECP384R1,
#endif
#if defined(MBEDTLS_ECP_DP_SECP521R1_ENABLED)
        MBEDTLS_ECP_DP_SECP521R1,
#endif
        MBEDTLS_ECP_DP_NONE};
    mbedtls_ssl_conf_curves(&tc->conf, ws__tls_curves);
  }
#endif
#endif
  if (o->role == WS_SERVER) {
    if (o->cert_file)
      r = ws__tls_parse_file(1, tc, o->cert_file, NULL);
    else if (o->cert_pem)
      r = ws__tls_parse(1, tc, o->cert_pem, o->cert_pem_len, NULL);
    else
      r = MBEDTLS_ERR_X509_BAD_INPUT_DATA;
    if (r != 0) {
      ws__tls_seterr(err, errcap, "server certificate", r);
      goto fail;
    }
    if (o->key_file)
      r = ws__tls_parse_file(2, tc, o->key_file, o->key_password);
    else if (o->key_pem)
      r = ws__tls_parse(2, tc, o->key_pem, o->key_pem_len, o->key_password);
    else
      r = MBEDTLS_ERR_PK_BAD_INPUT_DATA;
    if (r != 0) {
      ws__tls_seterr(err, errcap, "server private key", r);
      goto fail;
    }
    r = mbedtls_ssl_conf_own_cert(&tc->conf, &tc->cert, &tc->key);
    if (r != 0) {
      ws__tls_seterr(err, errcap, "server certificate and key", r);
      goto fail;
    }
    mbedtls_ssl_conf_authmode(&tc->conf, MBEDTLS_SSL_VERIFY_NONE);
  } else {
    r = 0;
    if (o->ca_file) {
      r = ws__tls_parse_file(0, tc, o->ca_file, NULL);
    } else if (o->ca_pem) {
      r = ws__tls_parse(0, tc, o->ca_pem, o->ca_pem_len, NULL);
    } else if (!tc->insecure) {
      r = MBEDTLS_ERR_X509_FILE_IO_ERROR;
#if WS__HAVE_OS && defined(MBEDTLS_FS_IO)
      for (i = 0; bundles[i] && r < 0; i++)
        r = mbedtls_x509_crt_parse_file(&tc->ca, bundles[i]);
      /* A bundle with a few certificates mbedTLS cannot read still loads
       * the rest (r > 0 counts the failures). */
      if (r > 0 && tc->ca.version != 0) r = 0;
#endif
    }
    if (r != 0) {
      ws__tls_seterr(err, errcap, o->ca_file || o->ca_pem
                                      ? "CA certificates"
                                      : "no system CA bundle found", r);
      goto fail;
    }
    if (tc->insecure) {
      /* insecure_skip_verify: the caller turned authentication OFF. */
      mbedtls_ssl_conf_authmode(&tc->conf, MBEDTLS_SSL_VERIFY_NONE);
    } else {
      mbedtls_ssl_conf_authmode(&tc->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
      mbedtls_ssl_conf_ca_chain(&tc->conf, &tc->ca, NULL);
    }
  }
  *out = tc;
  return WS_OK;
fail:
  ws_tls_config_free(tc);
  return WS_EINVAL;
}

/* see ws.h */
int ws_tls_config_wrap(ws_tls_config **out, int role, void *mbedtls_conf) {
  ws_tls_config *tc;
  if (out == NULL || mbedtls_conf == NULL ||
      (role != WS_SERVER && role != WS_CLIENT))
    return WS_EINVAL;
  *out = NULL;
  if (ws__tls_psa_init() != 0) return WS_EIO;
  tc = (ws_tls_config *)mbedtls_calloc(1, sizeof *tc);
  if (tc == NULL) return WS_ENOMEM;
  tc->role = role;
  tc->use = (mbedtls_ssl_config *)mbedtls_conf;
  *out = tc;
  return WS_OK;
}

/* see ws.h */
void *ws_tls_config_mbedtls(ws_tls_config *tc) { return tc ? tc->use : NULL; }

/* see ws.h */
void ws_tls_config_free(ws_tls_config *tc) {
  if (tc == NULL) return;
  if (tc->own) {
    mbedtls_ssl_config_free(&tc->conf);
    mbedtls_x509_crt_free(&tc->ca);
    mbedtls_x509_crt_free(&tc->cert);
    mbedtls_pk_free(&tc->key);
    mbedtls_ctr_drbg_free(&tc->drbg);
    mbedtls_entropy_free(&tc->entropy);
  }
  mbedtls_free(tc);
}

/* see ws.h */
int ws_tls_new_io(ws_tls **out, ws_tls_config *tc, const ws_tls_io *io,
                  void *user, const char *host) {
  ws_tls *t;
  int r;
  if (out == NULL) return WS_EINVAL;
  *out = NULL;
  if (tc == NULL || io == NULL || io->send == NULL || io->recv == NULL)
    return WS_EINVAL;
  t = (ws_tls *)mbedtls_calloc(1, sizeof *t);
  if (t == NULL) return WS_ENOMEM;
  t->cfg = tc;
  t->io = *io;
  t->user = user;
  t->fd = -1;
  t->want = tc->role == WS_CLIENT ? WS_TLS_WANT_WRITE : WS_TLS_WANT_READ;
  mbedtls_ssl_init(&t->ssl);
  r = mbedtls_ssl_setup(&t->ssl, tc->use);
  if (r == 0 && tc->role == WS_CLIENT && host != NULL) {
    /* SNI and the name checked against the certificate: the URL's host. */
    r = mbedtls_ssl_set_hostname(&t->ssl, host);
    t->ip_len = (unsigned char)ws__tls_ip(host, t->ip);
    if (t->ip_len && !tc->insecure)
      mbedtls_ssl_set_verify(&t->ssl, ws__tls_verify_ip, t);
  }
  if (r != 0) {
    mbedtls_ssl_free(&t->ssl);
    mbedtls_free(t);
    return r == MBEDTLS_ERR_SSL_ALLOC_FAILED ? WS_ENOMEM : WS_EINVAL;
  }
  mbedtls_ssl_set_bio(&t->ssl, t, ws__tls_bio_send, ws__tls_bio_recv, NULL);
  *out = t;
  return WS_OK;
}

#if WS__HAVE_OS
/* A non-blocking socket as the transport (the session's fd). */
static int ws__tls_sock_send(ws_tls *t, const void *buf, size_t len,
                             size_t *n, void *user) {
  int flags = 0;
#ifdef MSG_NOSIGNAL
  flags = MSG_NOSIGNAL;
#endif
  (void)user;
  for (;;) {
    ssize_t r = send(t->fd, buf, len, flags);
    if (r >= 0) {
      *n = (size_t)r;
      return WS_OK;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return WS_EAGAIN;
    return errno == EPIPE || errno == ECONNRESET ? WS_EEOF : WS_EIO;
  }
}

static int ws__tls_sock_recv(ws_tls *t, void *buf, size_t cap, size_t *n,
                             void *user) {
  (void)user;
  for (;;) {
    ssize_t r = recv(t->fd, buf, cap, 0);
    if (r >= 0) {
      *n = (size_t)r; /* 0: end of stream */
      return WS_OK;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return WS_EAGAIN;
    return errno == ECONNRESET ? WS_EEOF : WS_EIO;
  }
}

/* see ws.h */
int ws_tls_new(ws_tls **out, ws_tls_config *tc, int fd, const char *host) {
  static const ws_tls_io sock = {ws__tls_sock_send, ws__tls_sock_recv};
  int rc;
  if (out == NULL) return WS_EINVAL;
  *out = NULL;
  if (fd < 0) return WS_EINVAL;
  rc = ws_tls_new_io(out, tc, &sock, NULL, host);
  if (rc == WS_OK) (*out)->fd = fd;
  return rc;
}
#endif /* WS__HAVE_OS */

static int ws__tls_fail(ws_tls *t, int r, const char *what) {
  if (t->err[0] == '\0') {
    if (r == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
      char info[160], *s;
      t->verify_failed = 1;
      uint32_t fl = mbedtls_ssl_get_verify_result(&t->ssl);
      info[0] = '\0';
      mbedtls_x509_crt_verify_info(info, sizeof info, "", fl);
      for (s = info; *s; s++) /* one line: "a; b" */
        if (*s == '\n') *s = s[1] ? ';' : '\0';
      mbedtls_snprintf(t->err, sizeof t->err,
                       "TLS certificate verification failed: %s", info);
    } else if (r == MBEDTLS_ERR_SSL_CONN_EOF) {
      mbedtls_snprintf(t->err, sizeof t->err, "%s: connection closed by peer", what);
    } else {
      ws__tls_seterr(t->err, sizeof t->err, what, r);
    }
  }
  return WS_EIO;
}

static int ws__tls_handshake(ws_tls *t) {
  int r = mbedtls_ssl_handshake(&t->ssl);
#ifdef MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET
  while (r == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
    r = mbedtls_ssl_handshake(&t->ssl); /* as in ws_tls_read */
#endif
  if (r == 0) {
    t->hs_done = 1;
    t->want = 0;
    return WS_OK;
  }
  if (r == MBEDTLS_ERR_SSL_WANT_READ) {
    t->want = WS_TLS_WANT_READ;
    return WS_EAGAIN;
  }
  if (r == MBEDTLS_ERR_SSL_WANT_WRITE) {
    t->want = WS_TLS_WANT_WRITE;
    return WS_EAGAIN;
  }
  return ws__tls_fail(t, r, "TLS handshake failed");
}

/* see ws.h */
int ws_tls_read(ws_tls *t, void *buf, size_t cap, size_t *n) {
  int r;
  *n = 0;
  if (t->peer_closed) return WS_OK;
  if (!t->hs_done && (r = ws__tls_handshake(t)) != WS_OK) return r;
  if (cap > INT_MAX) cap = INT_MAX;
  for (;;) {
    r = mbedtls_ssl_read(&t->ssl, (unsigned char *)buf, cap);
    if (r > 0) {
      *n = (size_t)r;
      if (t->want == WS_TLS_WANT_WRITE) t->want = 0;
      return WS_OK;
    }
    if (r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY ||
        r == MBEDTLS_ERR_SSL_CONN_EOF) {
      t->peer_closed = 1; /* end of stream */
      return WS_OK;
    }
    if (r == MBEDTLS_ERR_SSL_WANT_READ) return WS_EAGAIN;
    if (r == MBEDTLS_ERR_SSL_WANT_WRITE) {
      t->want = WS_TLS_WANT_WRITE;
      return WS_EAGAIN;
    }
#ifdef MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET
    /* TLS 1.3 (mbedTLS 3.6): a ticket was processed; call again. */
    if (r == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET) continue;
#endif
    return ws__tls_fail(t, r, "TLS read failed");
  }
}

/* see ws.h */
int ws_tls_write(ws_tls *t, const void *buf, size_t len, size_t *n) {
  int r;
  size_t chunk;
  *n = 0;
  if (!t->hs_done && (r = ws__tls_handshake(t)) != WS_OK) return r;
  /* After WANT_WRITE, mbedTLS must be called again with the same bytes:
   * the caller's queue still starts with them, perhaps with more after. */
  chunk = t->wpend ? t->wpend : len < WS__TLS_CHUNK ? len : (size_t)WS__TLS_CHUNK;
  if (chunk > len) chunk = len;
  if (chunk == 0) return WS_OK;
  for (;;) {
    r = mbedtls_ssl_write(&t->ssl, (const unsigned char *)buf, chunk);
    if (r >= 0) {
      *n = (size_t)r;
      t->wpend = 0;
      if (t->want == WS_TLS_WANT_READ) t->want = 0;
      return WS_OK;
    }
    if (r == MBEDTLS_ERR_SSL_WANT_WRITE || r == MBEDTLS_ERR_SSL_WANT_READ) {
      t->wpend = chunk;
      if (r == MBEDTLS_ERR_SSL_WANT_READ) t->want = WS_TLS_WANT_READ;
      return WS_EAGAIN;
    }
#ifdef MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET
    if (r == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET) continue;
#endif
    return ws__tls_fail(t, r, "TLS write failed");
  }
}

/* see ws.h */
unsigned ws_tls_wants(const ws_tls *t) {
  if (t == NULL) return 0;
  return t->hs_done ? t->want : (unsigned)(WS_TLS_HANDSHAKING | t->want);
}

/* see ws.h */
int ws_tls_close(ws_tls *t) {
  if (t == NULL) return WS_EINVAL;
  if (!t->closed && t->hs_done && !t->io_failed)
    (void)mbedtls_ssl_close_notify(&t->ssl); /* best effort, non-blocking */
  t->closed = 1;
  return t->io_failed ? WS_EIO : WS_OK;
}

/* see ws.h */
const char *ws_tls_error(const ws_tls *t) { return t ? t->err : ""; }

/* see ws.h */
int ws_tls_verify_failed(const ws_tls *t) { return t ? t->verify_failed : 0; }

/* see ws.h */
size_t ws_tls_memory(const ws_tls *t) {
  /* Each record buffer: its content, a 13-byte header and room for the
   * IV, MAC and padding (under 300 bytes for every suite). */
  (void)t;
  return sizeof *t + MBEDTLS_SSL_IN_CONTENT_LEN + MBEDTLS_SSL_OUT_CONTENT_LEN +
         2 * 300;
}

/* see ws.h */
void ws_tls_free(ws_tls *t) {
  if (t == NULL) return;
  mbedtls_ssl_free(&t->ssl);
  mbedtls_free(t);
}

/* see ws.h */
int ws_tls_available(void) { return 1; }

#elif WS__HAVE_NET && !defined(WS_NO_LOOP)

/* Built without mbedTLS: the same names, refusing politely, so a program
 * can offer TLS options and say why they do not work. */
/* see ws.h */
int ws_tls_available(void) { return 0; }
/* see ws.h */
void ws_tls_options_init(ws_tls_options *o, int role) {
  memset(o, 0, sizeof *o);
  o->role = role;
}
/* see ws.h */
int ws_tls_config_new(ws_tls_config **out, const ws_tls_options *o,
                      char *err, size_t errcap) {
  static const char m[] = "built without TLS (needs mbedTLS and WS_ENABLE_MBEDTLS=1)";
  (void)o;
  if (out) *out = NULL;
  if (err && errcap) {
    size_t k = errcap - 1 < sizeof m - 1 ? errcap - 1 : sizeof m - 1;
    memcpy(err, m, k);
    err[k] = '\0';
  }
  return WS_EINVAL;
}
/* see ws.h */
int ws_tls_config_wrap(ws_tls_config **out, int role, void *mbedtls_conf) {
  (void)role, (void)mbedtls_conf;
  if (out) *out = NULL;
  return WS_EINVAL;
}
/* see ws.h */
void *ws_tls_config_mbedtls(ws_tls_config *tc) { (void)tc; return NULL; }
/* see ws.h */
void ws_tls_config_free(ws_tls_config *tc) { (void)tc; }
/* see ws.h */
const char *ws_tls_error(const ws_tls *t) { (void)t; return ""; }

/* see ws.h */
int ws_tls_verify_failed(const ws_tls *t) { (void)t; return 0; }

#endif /* WS_ENABLE_MBEDTLS */
