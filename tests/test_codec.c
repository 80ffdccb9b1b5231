/*
 * test_codec.c - layer 0, the pure codec: SHA-1, Base64, the accept key,
 * frame headers, masking, UTF-8, close payloads and both sides of the
 * opening handshake.
 *
 * Tables of inputs with the expected status and position. Every valid input
 * is also cut at every byte (the parsers must answer WS_EAGAIN, never an
 * error, never WS_OK), and parsers read their input placed flush against an
 * unreadable page, so reading one byte too far faults.
 */
#define _DEFAULT_SOURCE 1 /* MAP_ANONYMOUS next to ws.c's _POSIX_C_SOURCE */
#include "../src/ws.c"
#include "t.h"

#include <stdlib.h>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#if !defined(MAP_ANONYMOUS) && defined(MAP_ANON)
#define MAP_ANONYMOUS MAP_ANON
#endif
#endif

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

/* A string literal and its length, NULs included. */
#define BYTES(s) s, sizeof(s) - 1

/* C string equality, printing both on failure. */
#define CHECK_STR(a, b)                                                    \
  do {                                                                     \
    const char *t_g_ = (a), *t_w_ = (b);                                   \
    if (!t_check(t_g_ != NULL && strcmp(t_g_, t_w_) == 0, __FILE__,        \
                 __LINE__, #a " == " #b))                                  \
      printf("    got \"%s\", want \"%s\"\n", t_g_ ? t_g_ : "(null)", t_w_); \
  } while (0)

/* A counted string (p, n) equals the C string s, printing both on failure. */
#define CHECK_SPAN(p, n, s)                                                \
  do {                                                                     \
    const char *t_p_ = (p), *t_w_ = (s);                                   \
    size_t t_n_ = (n);                                                     \
    if (!t_check(same(t_p_, t_n_, t_w_), __FILE__, __LINE__,               \
                 #p " == " #s))                                            \
      printf("    got \"%.*s\", want \"%s\"\n", t_p_ ? (int)t_n_ : 6,      \
             t_p_ ? t_p_ : "(null)", t_w_);                                \
  } while (0)

static int same(const char *p, size_t n, const char *s) {
  return p != NULL && n == strlen(s) && memcmp(p, s, n) == 0;
}

/* A buffer followed by an unreadable page: input copied flush against its
 * end makes any read past that end fault (picohttpparser's test.c). Without
 * mmap it is a plain buffer and only ASan/valgrind catch over-reads. */
typedef struct guard {
  unsigned char *base;
  size_t size, page;
} guard;

#define GUARD_SIZE 8192

static void guard_init(guard *g) {
  g->size = GUARD_SIZE;
  g->page = 0;
#ifdef MAP_ANONYMOUS
  {
    long pg = sysconf(_SC_PAGESIZE);
    size_t page = pg > 0 ? (size_t)pg : 4096;
    size_t usable = (GUARD_SIZE + page - 1) / page * page;
    void *m = mmap(NULL, usable + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m != MAP_FAILED) {
      if (mprotect((unsigned char *)m + usable, page, PROT_NONE) == 0) {
        g->base = (unsigned char *)m;
        g->size = usable;
        g->page = page;
        return;
      }
      munmap(m, usable + page);
    }
  }
#endif
  g->base = (unsigned char *)malloc(g->size);
  if (g->base == NULL) abort();
}

static void guard_free(guard *g) {
#ifdef MAP_ANONYMOUS
  if (g->page) {
    munmap(g->base, g->size + g->page);
    return;
  }
#endif
  free(g->base);
}

/* The n bytes that end where the unreadable page begins. */
static unsigned char *guard_at(guard *g, size_t n) {
  if (n > g->size) abort();
  return g->base + g->size - n;
}

/* Copies p[0..n) flush against the unreadable page. */
static unsigned char *guard_put(guard *g, const void *p, size_t n) {
  unsigned char *d = guard_at(g, n);
  if (n) memcpy(d, p, n);
  return d;
}

static void to_hex(const unsigned char *p, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  size_t i;
  for (i = 0; i < n; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  out[2 * n] = '\0';
}

/* xorshift32: deterministic pseudo-random numbers; the state is the
 * caller's. */
static uint32_t rnd(uint32_t *s) {
  uint32_t x = *s;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return *s = x;
}

/* The RFC 6455 section 1.3 example key and the nonce it encodes. */
#define RFC_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
static const uint8_t rfc_nonce[16] = {'t', 'h', 'e', ' ', 's', 'a', 'm', 'p',
                                      'l', 'e', ' ', 'n', 'o', 'n', 'c', 'e'};

/* ------------------------------------------------------------------------
 * 1. SHA-1 and Base64
 * ---------------------------------------------------------------------- */

typedef struct sha1_case {
  const char *unit; /* the message is `unit` repeated `reps` times */
  size_t reps;
  const char *digest;
} sha1_case;

/* Hashes msg in chunks of the sizes in `sizes` (cycled), or in one update
 * when nsizes is 0. */
static void sha1_hex(const unsigned char *msg, size_t n, const size_t *sizes,
                     size_t nsizes, char hex[41]) {
  ws__sha1 s;
  unsigned char md[20];
  size_t off = 0, k = 0;
  ws__sha1_init(&s);
  if (nsizes == 0) {
    ws__sha1_update(&s, msg, n);
  } else {
    while (off < n) {
      size_t take = WS__MIN(sizes[k % nsizes], n - off);
      ws__sha1_update(&s, msg + off, take);
      off += take;
      k++;
    }
  }
  ws__sha1_final(&s, md);
  to_hex(md, 20, hex);
}

static void test_sha1(void) {
  /* FIPS 180 examples, then 'a' repeated around the padding boundaries
   * (55 bytes fit one block with the length, 56 need a second). */
  static const sha1_case cases[] = {
      {"abc", 1, "a9993e364706816aba3e25717850c26c9cd0d89d"},
      {"", 1, "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 1,
       "84983e441c3bd26ebaae4aa1f95129e5e54670f1"},
      {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
       "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
       1, "a49b2446a02c645bf419f995b67091253a04a259"},
      {"a", 55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"},
      {"a", 56, "c2db330f6083854c99d4b5bfb6e8f29f201be699"},
      {"a", 57, "f08f24908d682555111be7ff6f004e78283d989a"},
      {"a", 63, "03f09f5b158a7a8cdad920bddc29b81c18a551f5"},
      {"a", 64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"},
      {"a", 65, "11655326c708d70319be2610e8a57d9a5b959d3b"},
      {"a", 119, "ee971065aaa017e0632a8ca6c77bb3bf8b1dfc56"},
      {"a", 120, "f34c1488385346a55709ba056ddd08280dd4c6d6"},
      {"a", 1000000, "34aa973cd4c4daa4f61eeb2bdbad27316534016f"},
  };
  static const size_t uneven[] = {1, 63, 64, 65, 1000};
  static const size_t one[] = {1};
  size_t i;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const sha1_case *c = &cases[i];
    size_t ulen = strlen(c->unit), n = ulen * c->reps, r, k, bad = 0;
    unsigned char *msg = (unsigned char *)malloc(n + 1);
    char hex[41];
    if (msg == NULL) abort();
    for (r = 0; r < c->reps; r++) memcpy(msg + r * ulen, c->unit, ulen);
    sha1_hex(msg, n, NULL, 0, hex);
    CHECK_STR(hex, c->digest);
    sha1_hex(msg, n, uneven, 5, hex);
    CHECK_STR(hex, c->digest);
    if (n <= 200) {
      /* Two updates split at every offset, and one byte at a time. */
      for (k = 0; k <= n; k++) {
        size_t two[2];
        two[0] = k ? k : n + 1; /* k = 0: one chunk of everything */
        two[1] = n + 1;
        sha1_hex(msg, n, two, 2, hex);
        if (strcmp(hex, c->digest) != 0) bad++;
      }
      CHECK_INT(bad, 0);
      sha1_hex(msg, n, one, 1, hex);
      CHECK_STR(hex, c->digest);
    }
    free(msg);
  }
}

static int b64_index(int ch) {
  static const char alpha[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const char *p = ch ? strchr(alpha, ch) : NULL;
  return p ? (int)(p - alpha) : -1;
}

/* The reference for ws__key_ok(): 24 characters that decode (by
 * b64_index()) to 16 bytes whose encoding is those same characters. */
static int key_oracle(const char *s, size_t n) {
  unsigned char raw[16];
  char enc[24];
  uint32_t acc = 0;
  int i, bits = 0, o = 0;
  if (n != 24) return 0;
  for (i = 0; i < 22; i++) {
    int v = b64_index((unsigned char)s[i]);
    if (v < 0) return 0;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (o < 16) raw[o++] = (unsigned char)(acc >> bits);
    }
  }
  ws__b64_encode(raw, 16, enc);
  return memcmp(enc, s, 24) == 0;
}

static void test_base64(void) {
  /* RFC 4648 section 10. */
  static const struct {
    const char *raw, *enc;
  } vec[] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
             {"foo", "Zm9v"},  {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
             {"foobar", "Zm9vYmFy"}};
  /* Sec-WebSocket-Key values that are not the Base64 of 16 bytes. */
  static const struct {
    const char *name, *in;
    size_t len;
  } bad[] = {
      {"empty", BYTES("")},
      {"15 bytes", BYTES("AAAAAAAAAAAAAAAAAAAA")},
      {"17 bytes", BYTES("AAAAAAAAAAAAAAAAAAAAAAA=")},
      {"18 bytes", BYTES("AAAAAAAAAAAAAAAAAAAAAAAA")},
      {"no padding", BYTES("AAAAAAAAAAAAAAAAAAAAAA")},
      {"one pad", BYTES("AAAAAAAAAAAAAAAAAAAAAA=")},
      {"three pads", BYTES("AAAAAAAAAAAAAAAAAAAAAA===")},
      {"pad then data", BYTES("AAAAAAAAAAAAAAAAAAAAAA=A")},
      {"pad at 22", BYTES("AAAAAAAAAAAAAAAAAAAAA===")},
      {"padding inside", BYTES("AAAA==AAAAAAAAAAAAAAAA==")},
      {"unused bits, B", BYTES("AAAAAAAAAAAAAAAAAAAAAB==")},
      {"unused bits, /", BYTES("AAAAAAAAAAAAAAAAAAAAA/==")},
      {"unused bits, 9", BYTES("AAAAAAAAAAAAAAAAAAAAA9==")},
      {"url-safe alphabet", BYTES("AAAAAAAAAAAAAAAAAAA-_A==")},
      {"space", BYTES("AAAAAAAAAA AAAAAAAAAAA==")},
      {"NUL", BYTES("AAAAAAAAAA\0AAAAAAAAAAA==")},
      {"high byte", BYTES("AAAAAAAAAA\xC3" "AAAAAAAAAAA==")},
      {"bang at 0", BYTES("!AAAAAAAAAAAAAAAAAAAAA==")},
  };
  char enc[128], s[40];
  unsigned char raw[64] = {0};
  size_t i, n, bad_count;
  int k, ch, pos;
  uint32_t seed = 12345;

  for (i = 0; i < sizeof vec / sizeof vec[0]; i++) {
    size_t rl = strlen(vec[i].raw), el = strlen(vec[i].enc);
    n = ws__b64_encode((const unsigned char *)vec[i].raw, rl, enc);
    CHECK_INT(n, el);
    CHECK_MEM(enc, vec[i].enc, el);
  }
  /* Encodings of pseudo-random bytes of every length up to 48: the
   * length, the alphabet, and the bytes back (by b64_index()). */
  bad_count = 0;
  for (n = 0; n <= 48; n++) {
    size_t e, o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (i = 0; i < n; i++) raw[i] = (unsigned char)rnd(&seed);
    e = ws__b64_encode(raw, n, enc);
    if (e != (n + 2) / 3 * 4) bad_count++;
    for (i = 0; i < e && enc[i] != '='; i++) {
      int v = b64_index((unsigned char)enc[i]);
      if (v < 0) {
        bad_count++;
        break;
      }
      acc = acc << 6 | (uint32_t)v;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        if (o < n && raw[o] != (unsigned char)(acc >> bits)) bad_count++;
        o++;
      }
    }
    if (o != n || (acc & ((1u << bits) - 1)) != 0) bad_count++;
  }
  CHECK_INT(bad_count, 0);

  /* The key check, which does not decode: the named refusals, then every
   * byte at every position of keys made from pseudo-random nonces, and
   * every length up to 39, against key_oracle(). */
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (!t_check(!ws__key_ok(bad[i].in, bad[i].len), __FILE__, __LINE__,
                 "key refused"))
      printf("    %s\n", bad[i].name);
  CHECK(ws__key_ok("dGhlIHNhbXBsZSBub25jZQ==", 24));
  CHECK(ws__key_ok("/////////////////////w==", 24));
  bad_count = 0;
  for (k = 0; k < 64; k++) {
    size_t accepted = 0;
    for (i = 0; i < 16; i++) raw[i] = (unsigned char)rnd(&seed);
    ws__b64_encode(raw, 16, enc);
    memset(enc + 24, '=', 16);
    if (!ws__key_ok(enc, 24)) bad_count++;
    for (pos = 0; pos < 24; pos++) {
      for (ch = 0; ch < 256; ch++) {
        memcpy(s, enc, 24);
        s[pos] = (char)ch;
        if (ws__key_ok(s, 24) != key_oracle(s, 24)) bad_count++;
        accepted += (size_t)ws__key_ok(s, 24);
      }
    }
    /* 24 positions of the original, 21 x 63 + 3 others in the alphabet,
     * 3 others for the 22nd character. */
    if (accepted != 24 + 21 * 63 + 3) bad_count++;
    for (n = 0; n < 40; n++)
      if (ws__key_ok(enc, n) != (n == 24)) bad_count++;
  }
  CHECK_INT(bad_count, 0);
}

/* ------------------------------------------------------------------------
 * 2. The accept key
 * ---------------------------------------------------------------------- */

static void test_accept_key(void) {
  static const struct {
    const char *key, *accept;
  } kat[] = {
      {RFC_KEY, RFC_ACCEPT},
      {"x3JJHMbDL1EzLkh9GBhXDw==", "HSmrc0sMlYUkAGmm5OPpG2HaGWk="},
      {"", "Kfh9QIsMVZcl6xEPYxPHzW8SZ8w="},
      {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
       "CNVCgqrOv9cq/hZteEmJXitx+cU="},
  };
  char out[29], big[66];
  size_t i;
  for (i = 0; i < sizeof kat / sizeof kat[0]; i++) {
    memset(out, 'x', sizeof out);
    CHECK_INT(ws_accept_key(kat[i].key, strlen(kat[i].key), out), WS_OK);
    CHECK_INT(out[WS_ACCEPT_LEN], '\0');
    CHECK_STR(out, kat[i].accept);
  }
  /* Only key_len bytes are read. */
  CHECK_INT(ws_accept_key(RFC_KEY "junk", 24, out), WS_OK);
  CHECK_STR(out, RFC_ACCEPT);
  /* 64 bytes is the limit. */
  memset(big, 'A', sizeof big);
  big[65] = '\0';
  CHECK_INT(ws_accept_key(big, 64, out), WS_OK);
  CHECK_STR(out, "CNVCgqrOv9cq/hZteEmJXitx+cU=");
  CHECK_INT(ws_accept_key(big, 65, out), WS_EINVAL);
  CHECK_INT(ws_accept_key(big, (size_t)-1, out), WS_EINVAL);
  CHECK_INT(ws_accept_key(NULL, 0, out), WS_EINVAL);
  CHECK_INT(ws_accept_key(RFC_KEY, 24, NULL), WS_EINVAL);
}

/* ------------------------------------------------------------------------
 * 3. Frame headers
 * ---------------------------------------------------------------------- */

typedef struct frame_case {
  const char *name;
  const char *wire; /* the header, then the payload when text is set */
  size_t wire_len;
  size_t hdr_len;
  int fin, opcode;
  const char *key; /* the 4-byte mask key, or NULL when unmasked */
  uint64_t len;
  const char *text; /* the unmasked payload, or NULL when not in wire */
} frame_case;

/* Checks a parsed header against what was written. */
static int frame_is(const ws_frame *f, int fin, int op, uint64_t len,
                    const uint8_t *key) {
  static const uint8_t zero[4] = {0, 0, 0, 0};
  return f->fin == fin && f->opcode == op && f->len == len && f->rsv == 0 &&
         f->masked == (key != NULL) &&
         memcmp(f->mask, key ? key : zero, 4) == 0;
}

/* Every proper prefix of a valid header needs more bytes; a header of n
 * bytes. Returns the number of prefixes that answered anything else. */
static size_t frame_prefixes(guard *g, const void *hdr, size_t n) {
  size_t k, bad = 0;
  for (k = 0; k < n; k++) {
    ws_frame f;
    size_t h = 99;
    if (ws_frame_parse(guard_put(g, hdr, k), k, &f, &h) != WS_EAGAIN) bad++;
  }
  return bad;
}

static void test_frame_rfc_examples(void) {
  /* RFC 6455 section 5.7. */
  static const frame_case cases[] = {
      {"unmasked text", BYTES("\x81\x05" "Hello"), 2, 1, WS_OP_TEXT, NULL, 5,
       "Hello"},
      {"masked text", BYTES("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"), 6,
       1, WS_OP_TEXT, "\x37\xfa\x21\x3d", 5, "Hello"},
      {"fragment Hel", BYTES("\x01\x03" "Hel"), 2, 0, WS_OP_TEXT, NULL, 3,
       "Hel"},
      {"fragment lo", BYTES("\x80\x02" "lo"), 2, 1, WS_OP_CONT, NULL, 2, "lo"},
      {"unmasked ping", BYTES("\x89\x05" "Hello"), 2, 1, WS_OP_PING, NULL, 5,
       "Hello"},
      {"masked pong", BYTES("\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"), 6,
       1, WS_OP_PONG, "\x37\xfa\x21\x3d", 5, "Hello"},
      {"256 bytes binary", BYTES("\x82\x7E\x01\x00"), 4, 1, WS_OP_BINARY, NULL,
       256, NULL},
      {"64 KiB binary",
       BYTES("\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00"), 10, 1,
       WS_OP_BINARY, NULL, 65536, NULL},
  };
  guard g;
  size_t i;
  guard_init(&g);
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const frame_case *c = &cases[i];
    const uint8_t *key = (const uint8_t *)c->key;
    unsigned char out[WS_FRAME_HEADER_MAX], pay[16];
    ws_frame f;
    size_t h = 0, n;
    unsigned long failed = t_failed;
    int rc;
    /* The whole frame, then the header alone (no byte of payload read). */
    memset(&f, 0xAA, sizeof f);
    rc = ws_frame_parse(guard_put(&g, c->wire, c->wire_len), c->wire_len, &f,
                        &h);
    CHECK_INT(rc, WS_OK);
    CHECK_INT(h, c->hdr_len);
    CHECK(frame_is(&f, c->fin, c->opcode, c->len, key));
    memset(&f, 0xAA, sizeof f);
    rc = ws_frame_parse(guard_put(&g, c->wire, c->hdr_len), c->hdr_len, &f,
                        &h);
    CHECK_INT(rc, WS_OK);
    CHECK_INT(h, c->hdr_len);
    CHECK(frame_is(&f, c->fin, c->opcode, c->len, key));
    CHECK_INT(frame_prefixes(&g, c->wire, c->hdr_len), 0);
    /* The payload unmasks to the text, and the text masks to the wire. */
    if (c->text) {
      memcpy(pay, c->wire + c->hdr_len, (size_t)c->len);
      if (key) ws_mask(pay, (size_t)c->len, f.mask, 0);
      CHECK_MEM(pay, c->text, (size_t)c->len);
      memcpy(pay, c->text, (size_t)c->len);
      if (key) ws_mask(pay, (size_t)c->len, key, 0);
      CHECK_MEM(pay, c->wire + c->hdr_len, (size_t)c->len);
    }
    /* The writer produces the same header byte for byte. */
    n = ws_frame_write(out, c->fin, c->opcode, c->len, key);
    CHECK_INT(n, c->hdr_len);
    CHECK_MEM(out, c->wire, c->hdr_len);
    if (t_failed != failed) printf("    (frame: %s)\n", c->name);
  }
  guard_free(&g);
}

static void test_frame_round_trip(void) {
  /* How each length is encoded (an unmasked final binary frame). */
  static const struct {
    uint64_t len;
    const char *hdr;
    size_t n;
  } enc[] = {
      {0, BYTES("\x82\x00")},
      {1, BYTES("\x82\x01")},
      {125, BYTES("\x82\x7D")},
      {126, BYTES("\x82\x7E\x00\x7E")},
      {127, BYTES("\x82\x7E\x00\x7F")},
      {65535, BYTES("\x82\x7E\xFF\xFF")},
      {65536, BYTES("\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00")},
      {UINT64_C(1) << 32, BYTES("\x82\x7F\x00\x00\x00\x01\x00\x00\x00\x00")},
      {(UINT64_C(1) << 63) - 1,
       BYTES("\x82\x7F\x7F\xFF\xFF\xFF\xFF\xFF\xFF\xFF")},
  };
  static const int ops[] = {WS_OP_CONT, WS_OP_TEXT, WS_OP_BINARY,
                            WS_OP_CLOSE, WS_OP_PING, WS_OP_PONG};
  static const uint8_t key[4] = {0x01, 0x80, 0xFE, 0x7F};
  guard g;
  size_t i, o, prefix_bad = 0;
  int fin, masked;
  guard_init(&g);
  for (i = 0; i < sizeof enc / sizeof enc[0]; i++) {
    unsigned char out[WS_FRAME_HEADER_MAX];
    CHECK_INT(ws_frame_write(out, 1, WS_OP_BINARY, enc[i].len, NULL), enc[i].n);
    CHECK_MEM(out, enc[i].hdr, enc[i].n);
    CHECK_INT(ws_frame_write(out, 1, WS_OP_BINARY, enc[i].len, key),
              enc[i].n + 4);
    CHECK_INT(out[1], (unsigned char)enc[i].hdr[1] | 0x80);
    CHECK_MEM(out + 2, enc[i].hdr + 2, enc[i].n - 2);
    CHECK_MEM(out + enc[i].n, key, 4);
  }
  for (i = 0; i < sizeof enc / sizeof enc[0]; i++) {
    for (o = 0; o < sizeof ops / sizeof ops[0]; o++) {
      for (fin = 0; fin <= 1; fin++) {
        for (masked = 0; masked <= 1; masked++) {
          uint64_t len = enc[i].len;
          const uint8_t *k = masked ? key : NULL;
          unsigned char out[WS_FRAME_HEADER_MAX + 4];
          size_t n, want, h = 0;
          ws_frame f;
          int rc;
          memset(out, 0x5A, sizeof out);
          n = ws_frame_write(out, fin, ops[o], len, k);
          if (ops[o] >= 8 && (!fin || len > WS_CONTROL_MAX)) {
            CHECK_INT(n, 0);
            continue;
          }
          want = (len < 126 ? 2 : len <= 0xFFFF ? 4 : 10) + (masked ? 4 : 0);
          CHECK_INT(n, want);
          CHECK_INT(out[want], 0x5A); /* nothing written past the header */
          memset(&f, 0xAA, sizeof f);
          rc = ws_frame_parse(guard_put(&g, out, n), n, &f, &h);
          CHECK_INT(rc, WS_OK);
          CHECK_INT(h, n);
          CHECK(frame_is(&f, fin, ops[o], len, k));
          prefix_bad += frame_prefixes(&g, out, n);
        }
      }
    }
  }
  CHECK_INT(prefix_bad, 0);
  /* RSV bits are reported, not judged: RSV1..3 as bits 2..0. */
  {
    static const struct {
      unsigned char b0;
      int rsv;
    } rsv[] = {{0xC1, 4}, {0xA1, 2}, {0x91, 1}, {0xF2, 7}, {0x40, 4}};
    for (i = 0; i < sizeof rsv / sizeof rsv[0]; i++) {
      unsigned char hdr[2];
      ws_frame f;
      size_t h = 0;
      hdr[0] = rsv[i].b0;
      hdr[1] = 0x03;
      CHECK_INT(ws_frame_parse(guard_put(&g, hdr, 2), 2, &f, &h), WS_OK);
      CHECK_INT(f.rsv, rsv[i].rsv);
      CHECK_INT(f.opcode, rsv[i].b0 & 15);
      CHECK_INT(f.fin, rsv[i].b0 >> 7);
      CHECK_INT(f.len, 3);
    }
  }
  /* Bytes after the header are payload, not header. */
  {
    ws_frame f;
    size_t h = 0;
    CHECK_INT(ws_frame_parse("\x82\x7E\x01\x00\x82\x7E", 6, &f, &h), WS_OK);
    CHECK_INT(h, 4);
    CHECK_INT(f.len, 256);
  }
  guard_free(&g);
}

typedef struct frame_bad {
  const char *name;
  const char *wire;
  size_t n;
  size_t at; /* the shortest prefix that already answers WS_EPROTO */
} frame_bad;

/* Prefixes shorter than `at` need more bytes; from `at` on, WS_EPROTO. */
static void frame_expect_proto(guard *g, const char *name, const void *wire,
                               size_t n, size_t at) {
  size_t k, bad = 0;
  for (k = 0; k <= n; k++) {
    ws_frame f;
    size_t h = 99;
    int rc = ws_frame_parse(guard_put(g, wire, k), k, &f, &h);
    if (rc != (k < at ? WS_EAGAIN : WS_EPROTO)) {
      if (bad++ == 0)
        printf("    %s: prefix %u gave %s\n", name, (unsigned)k,
               ws_errname(rc));
    }
  }
  if (!t_check(bad == 0, __FILE__, __LINE__, "frame header rejected early"))
    printf("    %s\n", name);
}

static void test_frame_errors(void) {
  static const frame_bad bad[] = {
      {"close length 126", BYTES("\x88\x7E\x00\x7E"), 2},
      {"ping length 127", BYTES("\x89\x7F\x00\x00\x00\x00\x00\x01\x00\x00"),
       2},
      {"pong length 126 masked", BYTES("\x8A\xFE\x00\x7E\x01\x02\x03\x04"), 2},
      {"close length 127 with top bit",
       BYTES("\x88\x7F\x80\x00\x00\x00\x00\x00\x00\x00"), 2},
      {"64-bit length, top bit",
       BYTES("\x82\x7F\x80\x00\x00\x00\x00\x00\x00\x00"), 3},
      {"64-bit length, all ones, masked",
       BYTES("\x82\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\x01\x02\x03\x04"), 3},
      {"64-bit length 2^63", BYTES("\x02\x7F\x80\x00\x00\x00\x00\x00\x00\x00"),
       3},
      {"16-bit length 0", BYTES("\x82\x7E\x00\x00"), 4},
      {"16-bit length 125", BYTES("\x82\x7E\x00\x7D"), 4},
      {"16-bit length 125, masked", BYTES("\x82\xFE\x00\x7D\x01\x02\x03\x04"),
       4},
      {"64-bit length 0", BYTES("\x82\x7F\x00\x00\x00\x00\x00\x00\x00\x00"),
       10},
      {"64-bit length 125", BYTES("\x81\x7F\x00\x00\x00\x00\x00\x00\x00\x7D"),
       10},
      {"64-bit length 126", BYTES("\x81\x7F\x00\x00\x00\x00\x00\x00\x00\x7E"),
       10},
      {"64-bit length 65535",
       BYTES("\x82\x7F\x00\x00\x00\x00\x00\x00\xFF\xFF"), 10},
      {"64-bit length 65535, masked",
       BYTES("\x82\xFF\x00\x00\x00\x00\x00\x00\xFF\xFF\x01\x02\x03\x04"), 10},
  };
  guard g;
  size_t i;
  int op, fin;
  guard_init(&g);
  /* Reserved opcodes, with or without FIN and RSV bits: the first byte. */
  for (op = 0; op < 16; op++) {
    if (op <= 2 || (op >= 8 && op <= 10)) continue;
    for (fin = 0; fin <= 1; fin++) {
      unsigned char w[6];
      w[0] = (unsigned char)((fin ? 0x80 : 0) | op);
      w[1] = 0x00;
      frame_expect_proto(&g, "reserved opcode", w, 2, 1);
      w[0] |= 0x70;
      w[1] = 0x85;
      memcpy(w + 2, "\x01\x02\x03\x04", 4);
      frame_expect_proto(&g, "reserved opcode, RSV, masked", w, 6, 1);
    }
  }
  /* Fragmented control frames: the first byte. */
  for (op = 8; op <= 10; op++) {
    unsigned char w[2];
    w[0] = (unsigned char)op;
    w[1] = 0x00;
    frame_expect_proto(&g, "control without FIN", w, 2, 1);
  }
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
    frame_expect_proto(&g, bad[i].name, bad[i].wire, bad[i].n, bad[i].at);
  /* Boundaries that are valid. */
  {
    ws_frame f;
    size_t h = 0;
    CHECK_INT(ws_frame_parse("\x89\x7D", 2, &f, &h), WS_OK);
    CHECK_INT(f.len, 125);
    CHECK_INT(ws_frame_parse("\x82\x7E\x00\x7E", 4, &f, &h), WS_OK);
    CHECK_INT(f.len, 126);
    CHECK_INT(ws_frame_parse("\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00", 10,
                             &f, &h),
              WS_OK);
    CHECK_INT(f.len, 65536);
    CHECK_INT(ws_frame_parse("\x82\x7F\x7F\xFF\xFF\xFF\xFF\xFF\xFF\xFF", 10,
                             &f, &h),
              WS_OK);
    CHECK(f.len == (UINT64_C(1) << 63) - 1);
    /* NULL arguments. */
    CHECK_INT(ws_frame_parse(NULL, 2, &f, &h), WS_EINVAL);
    CHECK_INT(ws_frame_parse("\x81\x00", 2, NULL, &h), WS_EINVAL);
    CHECK_INT(ws_frame_parse("\x81\x00", 2, &f, NULL), WS_EINVAL);
  }
  guard_free(&g);
}

/* Every two-byte header against the rules written out independently. */
static void test_frame_two_bytes_exhaustive(void) {
  size_t bad = 0;
  unsigned b0, b1;
  for (b0 = 0; b0 < 256; b0++) {
    unsigned op = b0 & 15, fin = b0 >> 7;
    int reserved = !(op <= 2 || (op >= 8 && op <= 10));
    int control = op >= 8;
    unsigned char w[2];
    ws_frame f;
    size_t h = 0;
    int rc, want;
    w[0] = (unsigned char)b0;
    rc = ws_frame_parse(w, 1, &f, &h);
    if (rc != ((reserved || (control && !fin)) ? WS_EPROTO : WS_EAGAIN)) bad++;
    for (b1 = 0; b1 < 256; b1++) {
      unsigned l7 = b1 & 0x7F, masked = b1 >> 7;
      w[1] = (unsigned char)b1;
      if (reserved || (control && !fin) || (control && l7 > 125))
        want = WS_EPROTO;
      else if (l7 >= 126 || masked)
        want = WS_EAGAIN;
      else
        want = WS_OK;
      rc = ws_frame_parse(w, 2, &f, &h);
      if (rc != want) bad++;
      if (rc == WS_OK &&
          (h != 2 || f.len != l7 || f.opcode != op || f.fin != fin ||
           f.rsv != ((b0 >> 4) & 7) || f.masked != 0))
        bad++;
    }
  }
  CHECK_INT(bad, 0);
}

static void test_frame_write_errors(void) {
  static const struct {
    int fin, op;
    uint64_t len;
  } bad[] = {
      {1, -1, 0},
      {1, 16, 0},
      {1, 255, 0},
      {1, -128, 5},
      {0, WS_OP_CLOSE, 0},
      {0, WS_OP_PING, 0},
      {0, WS_OP_PONG, 5},
      {1, WS_OP_CLOSE, 126},
      {1, WS_OP_PING, 126},
      {1, WS_OP_PONG, 65536},
      {1, WS_OP_PING, UINT64_MAX},
      {1, WS_OP_BINARY, UINT64_C(1) << 63},
      {0, WS_OP_TEXT, UINT64_MAX},
  };
  static const uint8_t key[4] = {1, 2, 3, 4};
  unsigned char out[WS_FRAME_HEADER_MAX];
  size_t i;
  int op;
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK_INT(ws_frame_write(out, bad[i].fin, bad[i].op, bad[i].len, NULL), 0);
    CHECK_INT(ws_frame_write(out, bad[i].fin, bad[i].op, bad[i].len, key), 0);
  }
  /* The control boundary. */
  CHECK_INT(ws_frame_write(out, 1, WS_OP_CLOSE, 125, NULL), 2);
  CHECK_INT(ws_frame_write(out, 1, WS_OP_PONG, 125, key), 6);
  /* Any non-zero fin means FIN. */
  CHECK_INT(ws_frame_write(out, 7, WS_OP_PING, 0, NULL), 2);
  CHECK_INT(out[0], 0x89);
  /* Reserved opcodes 0..15 are writable (for tests and extensions); the
   * parser refuses them. */
  for (op = 3; op < 16; op++) {
    ws_frame f;
    size_t h;
    if (op >= 8 && op <= 10) continue;
    CHECK_INT(ws_frame_write(out, 1, op, 0, NULL), 2);
    CHECK_INT(out[0], 0x80 | op);
    CHECK_INT(ws_frame_parse(out, 2, &f, &h), WS_EPROTO);
  }
}

/* ------------------------------------------------------------------------
 * 4. Masking
 * ---------------------------------------------------------------------- */

static void ref_mask(unsigned char *p, size_t n, const uint8_t key[4],
                     uint64_t off) {
  size_t i;
  for (i = 0; i < n; i++) p[i] ^= key[(off + i) & 3];
}

static void fill(unsigned char *p, size_t n, unsigned salt) {
  size_t i;
  for (i = 0; i < n; i++) p[i] = (unsigned char)(i * 31u + salt * 7u + 1u);
}

#define MASK_BIG 65537

static void test_mask(void) {
  static const size_t large[] = {255, 256, 257, 1000, 4099};
  unsigned char *a = (unsigned char *)malloc(MASK_BIG + 32);
  unsigned char *b = (unsigned char *)malloc(MASK_BIG + 32);
  unsigned char kbuf[8];
  const uint8_t *key = kbuf + 1; /* an unaligned key */
  size_t len, i, s, bad;
  unsigned off, al;
  uint32_t seed = 0x9E3779B9u;
  guard g;
  if (a == NULL || b == NULL) abort();
  guard_init(&g);
  memcpy(kbuf, "\x00\x37\xfa\x21\x3d\x00\x00\x00", 8);

  /* Every length 0..100 and a few large ones, every offset 0..7 and every
   * alignment 0..7, against a byte-at-a-time reference. The whole buffer is
   * compared, so a write outside [al, al + len) shows too. */
  bad = 0;
  for (len = 0; len <= 100 + sizeof large / sizeof large[0]; len++) {
    size_t n = len <= 100 ? len : large[len - 101];
    for (off = 0; off < 8; off++) {
      for (al = 0; al < 8; al++) {
        fill(a, n + 16, (unsigned)len + off);
        memcpy(b, a, n + 16);
        ws_mask(a + al, n, key, off);
        ref_mask(b + al, n, key, off);
        if (memcmp(a, b, n + 16) != 0) bad++;
      }
    }
  }
  CHECK_INT(bad, 0);
  bad = 0;
  for (al = 0; al < 8; al++) {
    fill(a, MASK_BIG + 16, al);
    memcpy(b, a, MASK_BIG + 16);
    ws_mask(a + al, MASK_BIG, key, al * 3u);
    ref_mask(b + al, MASK_BIG, key, al * 3u);
    if (memcmp(a, b, MASK_BIG + 16) != 0) bad++;
  }
  CHECK_INT(bad, 0);

  /* Resumable: two pieces, the second at offset + split, give the same as
   * one go, for every split point. */
  bad = 0;
  for (len = 0; len <= 101; len++) {
    size_t n = len <= 100 ? len : 1000;
    for (off = 0; off < (n == 1000 ? 4u : 8u); off++) {
      fill(b, n, off);
      ref_mask(b, n, key, off);
      for (s = 0; s <= n; s++) {
        fill(a, n, off);
        ws_mask(a, s, key, off);
        ws_mask(a + s, n - s, key, off + s);
        if (memcmp(a, b, n) != 0) bad++;
      }
    }
  }
  CHECK_INT(bad, 0);

  /* Only offset % 4 matters, up to the top of the 64-bit range. */
  fill(a, 200, 1);
  fill(b, 200, 1);
  ws_mask(a, 200, key, (UINT64_C(1) << 32) + 1);
  ref_mask(b, 200, key, 1);
  CHECK_MEM(a, b, 200);
  fill(a, 200, 2);
  fill(b, 200, 2);
  ws_mask(a, 200, key, UINT64_MAX);
  ref_mask(b, 200, key, 3);
  CHECK_MEM(a, b, 200);

  /* Masking twice restores the input, for random keys and lengths. */
  bad = 0;
  for (i = 0; i < 200; i++) {
    uint8_t k[4];
    size_t n = rnd(&seed) % 300;
    uint64_t o = rnd(&seed);
    for (s = 0; s < 4; s++) k[s] = (uint8_t)rnd(&seed);
    for (s = 0; s < n; s++) a[s] = b[s] = (unsigned char)rnd(&seed);
    ws_mask(a, n, k, o);
    ws_mask(a, n, k, o);
    if (memcmp(a, b, n) != 0) bad++;
    /* ...and masking once with a non-zero key changes something. */
    if (n > 0 && (k[0] | k[1] | k[2] | k[3])) {
      ws_mask(a, n, k, 0);
      if (n >= 4 && memcmp(a, b, n) == 0) bad++;
    }
  }
  CHECK_INT(bad, 0);

  /* Flush against the unreadable page: no access past the end. */
  bad = 0;
  for (len = 0; len <= 100; len++) {
    for (off = 0; off < 4; off++) {
      unsigned char *p;
      fill(b, len, off);
      p = guard_put(&g, b, len);
      ws_mask(p, len, key, off);
      ref_mask(b, len, key, off);
      if (len && memcmp(p, b, len) != 0) bad++;
    }
  }
  CHECK_INT(bad, 0);

  guard_free(&g);
  free(a);
  free(b);
}

/* ------------------------------------------------------------------------
 * 5. UTF-8
 * ---------------------------------------------------------------------- */

typedef struct utf8_case {
  const char *name;
  const char *s;
  size_t len;
  int ok;        /* 1 valid, 0 invalid */
  size_t bad_at; /* when invalid and fed whole with final = 1 */
} utf8_case;

static const utf8_case utf8_cases[] = {
    /* valid */
    {"empty", BYTES(""), 1, 0},
    {"ASCII", BYTES("Hello, world"), 1, 0},
    {"NUL", BYTES("a\0b"), 1, 0},
    {"ASCII run of 40", BYTES("0123456789abcdefghijklmnopqrstuvwxyzABCD"), 1,
     0},
    {"U+0080", BYTES("\xC2\x80"), 1, 0},
    {"U+07FF", BYTES("\xDF\xBF"), 1, 0},
    {"U+0800", BYTES("\xE0\xA0\x80"), 1, 0},
    {"U+D7FF", BYTES("\xED\x9F\xBF"), 1, 0},
    {"U+E000", BYTES("\xEE\x80\x80"), 1, 0},
    {"BOM", BYTES("\xEF\xBB\xBF"), 1, 0},
    {"U+FFFE", BYTES("\xEF\xBF\xBE"), 1, 0},
    {"U+FFFF", BYTES("\xEF\xBF\xBF"), 1, 0},
    {"U+10000", BYTES("\xF0\x90\x80\x80"), 1, 0},
    {"U+3FFFF", BYTES("\xF0\xBF\xBF\xBF"), 1, 0},
    {"U+40000", BYTES("\xF1\x80\x80\x80"), 1, 0},
    {"U+FFFFF", BYTES("\xF3\xBF\xBF\xBF"), 1, 0},
    {"U+10FFFF", BYTES("\xF4\x8F\xBF\xBF"), 1, 0},
    {"kosme", BYTES("\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5"), 1, 0},
    {"Hello-mu-eszett", BYTES("Hello-\xC2\xB5@\xC3\x9F\xC3\xB6\xC3\xA4\xC3\xBC"
                              "\xC3\xA0\xC3\xA1-UTF-8!!"),
     1, 0},
    {"long mixed",
     BYTES("The quick brown fox \xE2\x80\x94 jumps over \xF0\x9F\x98\x80"
           " the lazy dog \xC3\xA9\xC3\xA8 0123456789abcdef\xEF\xBF\xBF"
           "\xF4\x8F\xBF\xBF" "end"),
     1, 0},
    {"sequences across 8-byte words",
     BYTES("1234567\xE2\x82\xAC" "12345\xF0\x9F\x92\xA9" "1234567\xC3\xA9"),
     1, 0},
    /* invalid first bytes */
    {"lone 0x80", BYTES("\x80"), 0, 0},
    {"lone 0xBF", BYTES("\xBF"), 0, 0},
    {"0x80 after ASCII", BYTES("a\x80"), 0, 1},
    {"0x80 after a 2-byte char", BYTES("\xC3\xA9\x80"), 0, 2},
    {"C0 80 (overlong NUL)", BYTES("\xC0\x80"), 0, 0},
    {"C0 AF (overlong /)", BYTES("\xC0\xAF"), 0, 0},
    {"C1 BF (max overlong 2)", BYTES("\xC1\xBF"), 0, 0},
    {"C0 space", BYTES("\xC0 "), 0, 0},
    {"F5", BYTES("\xF5\x80\x80\x80"), 0, 0},
    {"F7", BYTES("\xF7\xBF\xBF\xBF"), 0, 0},
    {"F8 (5 bytes)", BYTES("\xF8\x88\x80\x80\x80"), 0, 0},
    {"F8 overlong /", BYTES("\xF8\x80\x80\x80\xAF"), 0, 0},
    {"FC (6 bytes)", BYTES("\xFC\x84\x80\x80\x80\x80"), 0, 0},
    {"FC overlong /", BYTES("\xFC\x80\x80\x80\x80\xAF"), 0, 0},
    {"FE", BYTES("\xFE"), 0, 0},
    {"FF", BYTES("\xFF"), 0, 0},
    {"FE FE FF FF", BYTES("\xFE\xFE\xFF\xFF"), 0, 0},
    /* invalid second bytes */
    {"E0 80 80 (overlong)", BYTES("\xE0\x80\x80"), 0, 1},
    {"E0 80 AF (overlong /)", BYTES("\xE0\x80\xAF"), 0, 1},
    {"E0 9F BF (max overlong 3)", BYTES("\xE0\x9F\xBF"), 0, 1},
    {"F0 80 80 80 (overlong)", BYTES("\xF0\x80\x80\x80"), 0, 1},
    {"F0 80 80 AF (overlong /)", BYTES("\xF0\x80\x80\xAF"), 0, 1},
    {"F0 8F BF BF (max overlong 4)", BYTES("\xF0\x8F\xBF\xBF"), 0, 1},
    {"ED A0 80 (U+D800)", BYTES("\xED\xA0\x80"), 0, 1},
    {"ED AD BF (U+DB7F)", BYTES("\xED\xAD\xBF"), 0, 1},
    {"ED B0 80 (U+DC00)", BYTES("\xED\xB0\x80"), 0, 1},
    {"ED BF BF (U+DFFF)", BYTES("\xED\xBF\xBF"), 0, 1},
    {"surrogate pair", BYTES("\xED\xA0\x80\xED\xB0\x80"), 0, 1},
    {"F4 90 80 80 (U+110000)", BYTES("\xF4\x90\x80\x80"), 0, 1},
    {"F4 BF BF BF", BYTES("\xF4\xBF\xBF\xBF"), 0, 1},
    {"two leads", BYTES("\xC3\xC3\xA9"), 0, 1},
    {"C2 space", BYTES("\xC2 "), 0, 1},
    {"E0 space", BYTES("\xE0 "), 0, 1},
    {"one continuation too many", BYTES("\xC3\xA9\xA9"), 0, 2},
    /* truncated sequences followed by ASCII: fail at the ASCII byte */
    {"C3 then A", BYTES("\xC3" "A"), 0, 1},
    {"E2 then A", BYTES("\xE2" "A"), 0, 1},
    {"E2 82 then A", BYTES("\xE2\x82" "A"), 0, 2},
    {"F0 9F 98 then A", BYTES("\xF0\x9F\x98" "A"), 0, 3},
    {"F4 8F BF then space", BYTES("\xF4\x8F\xBF "), 0, 3},
    /* truncated at the end of a final chunk: bad_at == len */
    {"C3 at end", BYTES("\xC3"), 0, 1},
    {"E2 82 at end", BYTES("\xE2\x82"), 0, 2},
    {"F0 9F 98 at end", BYTES("\xF0\x9F\x98"), 0, 3},
    {"F4 at end", BYTES("abc\xF4"), 0, 4},
    {"ED 9F at end", BYTES("\xED\x9F"), 0, 2},
    /* after valid text and in the 8-byte fast path */
    {"kosme then surrogate (Autobahn 6.x)",
     BYTES("\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80"
           "edited"),
     0, 12},
    {"kosme then U+110000",
     BYTES("\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xF4\x90\x80\x80"
           "edited"),
     0, 12},
    {"0x80 after 16 ASCII", BYTES("0123456789abcdef\x80"), 0, 16},
    {"FF after 8 ASCII", BYTES("01234567\xFF" "01234567"), 0, 8},
    {"C0 after 9 ASCII", BYTES("012345678\xC0\x80"), 0, 9},
    {"lone continuation after long text",
     BYTES("The quick brown fox jumps over \xC3\xA9 the lazy dog\xBF"), 0, 46},
};

/* Feeds s[0..len) in chunks ending at cuts[0..ncuts) (ascending), then the
 * rest as the final chunk, each chunk flush against the guard page. Returns
 * the verdict; on WS_EUTF8 *bad_at is the offset in s. */
static int utf8_chunks(guard *g, const char *s, size_t len,
                       const size_t *cuts, size_t ncuts, size_t *bad_at) {
  uint32_t st = WS_UTF8_INIT;
  size_t from = 0, i;
  for (i = 0; i <= ncuts; i++) {
    size_t to = i < ncuts ? cuts[i] : len, bad = (size_t)-1;
    const unsigned char *p = guard_put(g, s + from, to - from);
    int rc = ws_utf8_check(&st, p, to - from, i == ncuts, &bad);
    if (rc != WS_OK) {
      *bad_at = from + bad;
      return rc;
    }
    from = to;
  }
  return WS_OK;
}

static int utf8_verdict(const utf8_case *c, int rc, size_t bad_at) {
  return c->ok ? rc == WS_OK : (rc == WS_EUTF8 && bad_at == c->bad_at);
}

static void test_utf8_table(void) {
  guard g;
  size_t i;
  guard_init(&g);
  for (i = 0; i < sizeof utf8_cases / sizeof utf8_cases[0]; i++) {
    const utf8_case *c = &utf8_cases[i];
    uint32_t st = WS_UTF8_INIT;
    size_t bad = (size_t)-1, k, j, cuts[128], miss;
    const unsigned char *p = guard_put(&g, c->s, c->len);
    int rc = ws_utf8_check(&st, p, c->len, 1, &bad);
    if (!t_check(utf8_verdict(c, rc, bad), __FILE__, __LINE__,
                 "utf8 whole, final"))
      printf("    %s: got %s at %u\n", c->name, ws_errname(rc),
             (unsigned)bad);
    if (c->ok) CHECK_INT(st, 0);
    /* bad_at may be NULL. */
    st = WS_UTF8_INIT;
    CHECK_INT(ws_utf8_check(&st, p, c->len, 1, NULL),
              c->ok ? WS_OK : WS_EUTF8);
    /* Not final: a sequence cut by the end is valid so far, state set. */
    st = WS_UTF8_INIT;
    bad = (size_t)-1;
    rc = ws_utf8_check(&st, p, c->len, 0, &bad);
    if (c->ok) {
      CHECK_INT(rc, WS_OK);
      CHECK_INT(st, 0);
    } else if (c->bad_at == c->len) {
      if (!t_check(rc == WS_OK && st != 0, __FILE__, __LINE__,
                   "utf8 truncated, not final: OK with state"))
        printf("    %s\n", c->name);
      /* ...and an empty final chunk then fails at its offset 0. */
      bad = (size_t)-1;
      CHECK_INT(ws_utf8_check(&st, "", 0, 1, &bad), WS_EUTF8);
      CHECK_INT(bad, 0);
    } else {
      if (!t_check(rc == WS_EUTF8 && bad == c->bad_at, __FILE__, __LINE__,
                   "utf8 whole, not final"))
        printf("    %s: got %s at %u\n", c->name, ws_errname(rc),
               (unsigned)bad);
    }
    /* Two chunks split at every offset, three chunks at every pair of
     * offsets (short inputs), and one byte at a time. */
    miss = 0;
    for (k = 0; k <= c->len; k++) {
      cuts[0] = k;
      rc = utf8_chunks(&g, c->s, c->len, cuts, 1, &bad);
      if (!utf8_verdict(c, rc, bad) && miss++ == 0)
        printf("    %s: split at %u: %s at %u\n", c->name, (unsigned)k,
               ws_errname(rc), (unsigned)bad);
      if (c->len > 24) continue;
      for (j = k; j <= c->len; j++) {
        cuts[1] = j;
        rc = utf8_chunks(&g, c->s, c->len, cuts, 2, &bad);
        if (!utf8_verdict(c, rc, bad) && miss++ == 0)
          printf("    %s: split at %u, %u: %s at %u\n", c->name,
                 (unsigned)k, (unsigned)j, ws_errname(rc), (unsigned)bad);
      }
    }
    for (k = 0; k + 1 < c->len && k < 128; k++) cuts[k] = k + 1;
    rc = utf8_chunks(&g, c->s, c->len, cuts, k, &bad);
    if (!utf8_verdict(c, rc, bad) && miss++ == 0)
      printf("    %s: one byte at a time: %s at %u\n", c->name,
             ws_errname(rc), (unsigned)bad);
    if (!t_check(miss == 0, __FILE__, __LINE__, "utf8 split feeding"))
      printf("    %s\n", c->name);
  }
  /* State carries across messages only through the caller: after a valid
   * final chunk it is back at WS_UTF8_INIT. Arguments. */
  {
    uint32_t st = WS_UTF8_INIT;
    CHECK_INT(ws_utf8_check(&st, "\xE2\x82", 2, 0, NULL), WS_OK);
    CHECK(st != WS_UTF8_INIT);
    CHECK_INT(ws_utf8_check(&st, "\xAC", 1, 1, NULL), WS_OK);
    CHECK_INT(st, WS_UTF8_INIT);
    CHECK_INT(ws_utf8_check(NULL, "a", 1, 1, NULL), WS_EINVAL);
    CHECK_INT(ws_utf8_check(&st, NULL, 1, 1, NULL), WS_EINVAL);
  }
  guard_free(&g);
}

/*
 * A reference validator written from RFC 3629's definition rather than
 * from ws.c's tables: a lead byte announces n bytes carrying a code point in
 * [min_n, max_n] that is not a surrogate; the input fails at the first byte
 * after which no continuation can complete such a code point. Returns 1
 * valid, 2 valid so far but inside a sequence (only when !final), 0 invalid
 * with *bad.
 */
static int ref_range_ok(uint32_t lo, uint32_t hi, int n) {
  static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
  static const uint32_t max[5] = {0, 0x7F, 0x7FF, 0xFFFF, 0x10FFFF};
  if (lo < min[n]) lo = min[n];
  if (hi > max[n]) hi = max[n];
  return lo <= hi && (lo < 0xD800 || hi > 0xDFFF);
}

static int ref_utf8(const unsigned char *s, size_t len, int final,
                    size_t *bad) {
  size_t i = 0;
  while (i < len) {
    unsigned b = s[i];
    int n, k;
    uint32_t cp;
    if (b < 0x80) {
      i++;
      continue;
    }
    n = (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3
        : (b & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0) {
      *bad = i;
      return 0;
    }
    cp = b & (0x7Fu >> n);
    for (k = 0; k < n; k++) {
      unsigned rem = 6u * (unsigned)(n - 1 - k);
      if (k > 0) {
        if (i + k >= len) {
          if (!final) return 2;
          *bad = len;
          return 0;
        }
        if ((s[i + k] & 0xC0) != 0x80) {
          *bad = i + k;
          return 0;
        }
        cp = (cp << 6) | (s[i + k] & 0x3Fu);
      }
      if (!ref_range_ok(cp << rem, (cp << rem) | ((1u << rem) - 1), n)) {
        *bad = i + k;
        return 0;
      }
    }
    i += (size_t)n;
  }
  return 1;
}

/* Random bytes that look like UTF-8 often enough to reach every state:
 * ASCII and ASCII runs, sequences of 2..4 bytes with random payload bits
 * (overlong, surrogate, too large or fine), sometimes cut short, and raw
 * high bytes. */
static size_t gen_utf8ish(uint32_t *rng, unsigned char *out, size_t max) {
  static const unsigned char edge[] = {0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF,
                                       0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1,
                                       0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1,
                                       0xF3, 0xF4, 0xF5, 0xF7, 0xF8, 0xFF};
  size_t n = 0, want = rnd(rng) % (max + 1);
  uint32_t r;
  while (n < want) {
    r = rnd(rng);
    switch (r & 15) {
      case 0:
      case 1:
      case 2:
        out[n++] = (unsigned char)((r >> 8) & 0x7F);
        break;
      case 3: {
        size_t run = 8 + ((r >> 8) & 7), i;
        for (i = 0; i < run; i++) out[n++] = (unsigned char)('a' + i);
        break;
      }
      case 13:
        out[n++] = edge[(r >> 8) % sizeof edge];
        break;
      case 14:
      case 15:
        out[n++] = (unsigned char)(0x80 | (r >> 8));
        break;
      default: {
        int len = 2 + (int)((r >> 4) % 3), i, keep;
        uint32_t cp = rnd(rng) & ((UINT32_C(1) << (5 * len + 1)) - 1);
        if (r & 0x100) cp |= UINT32_C(0x80) << (5 * (len - 2)); /* bias up */
        out[n++] = (unsigned char)((0xFF00u >> len) |
                                   (cp >> (6 * (len - 1))));
        keep = (r & 0x7000) ? len : 1 + (int)((r >> 16) % (unsigned)len);
        for (i = 1; i < keep; i++)
          out[n++] = (unsigned char)(0x80 | ((cp >> (6 * (len - 1 - i))) &
                                             0x3F));
        break;
      }
    }
  }
  /* Sometimes end inside the last sequence. */
  r = rnd(rng);
  if ((r & 3) == 0 && n > 0) n -= 1 + (r >> 8) % (n < 3 ? n : 3);
  return n;
}

#define UTF8_RANDOM 300000

static void test_utf8_differential(void) {
  unsigned char s[64];
  uint32_t rng = 0x12345678u;
  size_t i, mism = 0, valid = 0, truncated = 0;
  for (i = 0; i < UTF8_RANDOM; i++) {
    size_t n = gen_utf8ish(&rng, s, 40), rbad = 0, bad = (size_t)-1;
    size_t cuts[2];
    uint32_t st = WS_UTF8_INIT;
    int want = ref_utf8(s, n, 1, &rbad), rc, ok;
    rc = ws_utf8_check(&st, s, n, 1, &bad);
    ok = want == 1 ? rc == WS_OK : (rc == WS_EUTF8 && bad == rbad);
    valid += want == 1;
    /* not final */
    {
      size_t rb2 = 0, b2 = (size_t)-1;
      int w2 = ref_utf8(s, n, 0, &rb2);
      st = WS_UTF8_INIT;
      rc = ws_utf8_check(&st, s, n, 0, &b2);
      truncated += w2 == 2;
      if (w2 == 0)
        ok = ok && rc == WS_EUTF8 && b2 == rb2;
      else
        ok = ok && rc == WS_OK && (st != 0) == (w2 == 2);
    }
    /* two random cut points */
    cuts[0] = n ? rnd(&rng) % (n + 1) : 0;
    cuts[1] = cuts[0] + (n - cuts[0] ? rnd(&rng) % (n - cuts[0] + 1) : 0);
    {
      size_t from = 0, k, gbad = 0;
      int grc = WS_OK;
      st = WS_UTF8_INIT;
      for (k = 0; k <= 2 && grc == WS_OK; k++) {
        size_t to = k < 2 ? cuts[k] : n;
        grc = ws_utf8_check(&st, s + from, to - from, k == 2, &bad);
        if (grc != WS_OK) gbad = from + bad;
        from = to;
      }
      ok = ok &&
           (want == 1 ? grc == WS_OK : (grc == WS_EUTF8 && gbad == rbad));
    }
    if (!ok && mism++ == 0) {
      size_t k;
      printf("    differs from the reference on:");
      for (k = 0; k < n; k++) printf(" %02x", s[k]);
      printf(" (reference: %d at %u)\n", want, (unsigned)rbad);
    }
  }
  CHECK_INT(mism, 0);
  /* The generator reaches both verdicts and the "inside a sequence" state
   * often enough to mean something. */
  CHECK(valid > UTF8_RANDOM / 20);
  CHECK(truncated > UTF8_RANDOM / 100);
  CHECK(valid < UTF8_RANDOM - UTF8_RANDOM / 20);
  /* The reference itself agrees with the table. */
  for (i = 0; i < sizeof utf8_cases / sizeof utf8_cases[0]; i++) {
    const utf8_case *c = &utf8_cases[i];
    size_t rbad = (size_t)-1;
    int want = ref_utf8((const unsigned char *)c->s, c->len, 1, &rbad);
    if (!t_check(c->ok ? want == 1 : (want == 0 && rbad == c->bad_at),
                 __FILE__, __LINE__, "reference validator agrees"))
      printf("    %s\n", c->name);
  }
}

/*
 * Long inputs: ws_utf8_check() checks 64-byte blocks with SIMD where the
 * build has it (SSE2, NEON; not with -DWS_NO_SIMD, which the Makefile
 * builds as test_codec_nosimd), the rest with the DFA. These compare both
 * with the reference on inputs that cross many block boundaries.
 */
#if !WS_SMALL && !defined(WS_NO_SIMD) && !defined(WS__U8_SIMD) &&            \
    (defined(__SSE2__) || (defined(__ARM_NEON) && defined(__aarch64__)))
#error "this build should have the SIMD UTF-8 path: the tests would miss it"
#endif
#if (defined(WS_NO_SIMD) || WS_SMALL) && defined(WS__U8_SIMD)
#error "WS_NO_SIMD and WS_SMALL should leave the plain C path only"
#endif

/* Writes code point cp as UTF-8 (cp < 0x110000, not a surrogate). */
static size_t put_cp(unsigned char *o, uint32_t cp) {
  if (cp < 0x80) {
    o[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (unsigned char)(0xC0 | (cp >> 6));
    o[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (unsigned char)(0xE0 | (cp >> 12));
    o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (unsigned char)(0xF0 | (cp >> 18));
  o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Valid text of about `want` bytes (at most want + 3): ASCII, and with
 * probability mb_pct% a multi-byte character, often at the edge of a
 * range (the smallest and largest of each length, around the surrogates
 * and U+10FFFF). */
static size_t gen_text(uint32_t *rng, unsigned char *out, size_t want,
                       unsigned mb_pct) {
  static const uint32_t edge[] = {0x80,   0x7FF,   0x800,   0xFFF,  0x1000,
                                  0xD7FF, 0xE000,  0xFFFD,  0xFFFF, 0x10000,
                                  0x3FFFF, 0x40000, 0xFFFFF, 0x100000,
                                  0x10FFFF};
  size_t n = 0;
  while (n < want) {
    uint32_t r = rnd(rng), cp;
    if (r % 100 >= mb_pct) {
      out[n++] = (unsigned char)(0x20 + (r >> 8) % 95);
      continue;
    }
    switch ((r >> 8) & 7) {
      case 0: cp = edge[(r >> 11) % (sizeof edge / sizeof edge[0])]; break;
      case 1:
      case 2: cp = 0x80 + (r >> 11) % 0x780; break;
      case 3:
      case 4:
      case 5: cp = 0x800 + (r >> 11) % 0xF800; break;
      default: cp = 0x10000 + (r >> 11) % 0x100000; break;
    }
    if (cp >= 0xD800 && cp < 0xE000) cp += 0x800;
    n += put_cp(out + n, cp);
  }
  return n;
}

/* Checks s[0..n) placed at `align` bytes past a 64-byte boundary, whole
 * (final and not) and in the chunks ending at cuts[0..ncuts), against the
 * reference. Returns 1 when all agree. */
static int utf8_agrees(const unsigned char *s, size_t n, size_t align,
                       const size_t *cuts, size_t ncuts) {
  static unsigned char space[4096 + 128];
  unsigned char *b =
      space + (64 - (size_t)((uintptr_t)space % 64)) % 64 + align;
  size_t rbad = 0, rbad2 = 0, bad = (size_t)-1, from = 0, k;
  uint32_t st = WS_UTF8_INIT;
  int want, want2, rc;
  if (n + align + 64 > sizeof space) abort();
  memcpy(b, s, n);
  want = ref_utf8(b, n, 1, &rbad);
  rc = ws_utf8_check(&st, b, n, 1, &bad);
  if (want == 1 ? rc != WS_OK || st != 0 : rc != WS_EUTF8 || bad != rbad)
    return 0;
  /* Not final: the same, but where the input ends inside a sequence. */
  rbad2 = rbad;
  want2 = want == 0 && rbad == n ? ref_utf8(b, n, 0, &rbad2) : want;
  st = WS_UTF8_INIT;
  rc = ws_utf8_check(&st, b, n, 0, &bad);
  if (want2 == 0 ? rc != WS_EUTF8 || bad != rbad2
                 : rc != WS_OK || (st != 0) != (want2 == 2))
    return 0;
  st = WS_UTF8_INIT;
  for (k = 0; k <= ncuts; k++) {
    size_t to = k < ncuts ? cuts[k] : n;
    rc = ws_utf8_check(&st, b + from, to - from, k == ncuts, &bad);
    if (rc != WS_OK) return want == 0 && rc == WS_EUTF8 && from + bad == rbad;
    from = to;
  }
  return want == 1 && st == 0;
}

static void utf8_show(const char *what, const unsigned char *s, size_t n) {
  size_t k;
  printf("    %s (%u bytes):", what, (unsigned)n);
  for (k = 0; k < n; k++) printf(" %02x", s[k]);
  printf("\n");
}

#define UTF8_LONG 8000

/* Random text of 0..700 bytes, mostly ASCII to mostly multi-byte, with
 * up to three bytes then broken (a random byte, an edge byte, or one
 * dropped), at random alignments and cut into up to four chunks. */
static void test_utf8_long(void) {
  static const unsigned char edge[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90,
                                       0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2,
                                       0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE,
                                       0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5,
                                       0xF7, 0xF8, 0xFE, 0xFF};
  static const unsigned pct[] = {0, 1, 3, 10, 30, 60, 90, 100};
  unsigned char s[800];
  uint32_t rng = 0xC0FFEEu;
  size_t i, mism = 0, valid = 0;
  for (i = 0; i < UTF8_LONG; i++) {
    uint32_t r = rnd(&rng);
    size_t n = gen_text(&rng, s, r % 700, pct[(r >> 10) % 8]), cuts[3], k,
           nb = (r >> 13) % 4;
    for (k = 0; k < nb && n > 0; k++) {
      uint32_t q = rnd(&rng);
      size_t at = q % n;
      if ((q >> 20) % 4 == 0) {
        memmove(s + at, s + at + 1, n - at - 1);
        n--;
      } else {
        s[at] = (q >> 20) % 4 == 1 ? (unsigned char)(q >> 24)
                                   : edge[(q >> 24) % sizeof edge];
      }
    }
    if ((r >> 16) % 8 == 0 && n > 0) n -= 1 + (r >> 19) % (n < 3 ? n : 3);
    for (k = 0; k < 3; k++) cuts[k] = n ? rnd(&rng) % (n + 1) : 0;
    if (cuts[0] > cuts[1]) { size_t t = cuts[0]; cuts[0] = cuts[1]; cuts[1] = t; }
    if (cuts[1] > cuts[2]) { size_t t = cuts[1]; cuts[1] = cuts[2]; cuts[2] = t; }
    if (cuts[0] > cuts[1]) { size_t t = cuts[0]; cuts[0] = cuts[1]; cuts[1] = t; }
    {
      size_t rb;
      valid += ref_utf8(s, n, 1, &rb) == 1;
    }
    if (!utf8_agrees(s, n, (r >> 22) % 64, cuts, (r >> 28) % 4) &&
        mism++ == 0)
      utf8_show("differs from the reference", s, n);
  }
  CHECK_INT(mism, 0);
  CHECK(valid > UTF8_LONG / 4);
  CHECK(valid < UTF8_LONG - UTF8_LONG / 4);
}

/*
 * Every pair of bytes (lead, next), followed by the continuation bytes a
 * lead of that kind wants (all of them, or one short), placed at offsets
 * that straddle the 16- and 64-byte blocks (which begin 3 bytes into a
 * buffer) of ASCII and of two-byte text, fed whole and in two pieces.
 * Covers each range rule at each lane, and sequences cut by a block's end.
 */
static void test_utf8_pairs(void) {
  static const size_t at[] = {0, 18, 61, 63, 64, 65, 66, 67, 130};
  static const unsigned char some[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90,
                                       0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xE0,
                                       0xED, 0xF0, 0xF4, 0xFF};
  unsigned char s[150];
  size_t mism = 0, bg, a, b1, b2, k, n = sizeof s, cut, pos, want, shrt;
  for (bg = 0; bg < 2; bg++)
    for (a = 0; a < sizeof at / sizeof at[0]; a++)
      for (b1 = 0; b1 < 256; b1++)
        /* every second byte after E0..FF, some after others */
        for (b2 = 0; b2 < (b1 >= 0xE0 ? 256 : sizeof some); b2++)
          for (shrt = 0; shrt < 2; shrt++) {
            want = b1 >= 0xF0 ? 2 : b1 >= 0xE0 ? 1 : 0;
            if (shrt && want == 0) continue;
            want -= shrt;
            for (k = 0; k < n; k++)
              s[k] = bg == 0 ? (unsigned char)'a'
                             : (unsigned char)(k % 2 ? 0xA9 : 0xC3);
            pos = at[a] + (bg == 1 && at[a] % 2); /* a character boundary */
            s[pos] = (unsigned char)b1;
            s[pos + 1] = b1 >= 0xE0 ? (unsigned char)b2 : some[b2];
            for (k = 0; k < want; k++)
              s[pos + 2 + k] = (unsigned char)(0x80 + k);
            if (bg == 1 && want % 2 == 1) s[pos + 2 + want] = 'a';
            cut = pos + (b1 + b2) % 4;
            if (!utf8_agrees(s, n, (b1 ^ b2) % 16, &cut, 1) && mism++ == 0)
              utf8_show("differs from the reference", s, n);
          }
  CHECK_INT(mism, 0);
}

/* ------------------------------------------------------------------------
 * 6. Close payloads
 * ---------------------------------------------------------------------- */

static void test_close(void) {
  static const struct {
    unsigned lo, hi;
    int valid;
  } ranges[] = {{0, 999, 0},       {1000, 1003, 1}, {1004, 1006, 0},
                {1007, 1014, 1},   {1015, 2999, 0}, {3000, 4999, 1},
                {5000, 65535, 0}};
  guard g;
  unsigned char pay[200];
  const char *reason;
  size_t rlen, i, bad;
  uint16_t code;
  unsigned c;
  guard_init(&g);

  /* Empty payload: no status. */
  code = 0;
  reason = NULL;
  rlen = 99;
  CHECK_INT(ws_close_parse(guard_at(&g, 0), 0, &code, &reason, &rlen), WS_OK);
  CHECK_INT(code, WS_CLOSE_NO_STATUS);
  CHECK_INT(rlen, 0);
  CHECK(reason != NULL);
  /* One byte cannot hold a code. */
  CHECK_INT(ws_close_parse(guard_put(&g, "\x03", 1), 1, &code, &reason,
                           &rlen),
            WS_EPROTO);

  /* Every code: classified, and accepted on the wire exactly when valid. */
  bad = 0;
  for (i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
    for (c = ranges[i].lo; c <= ranges[i].hi; c++) {
      int rc;
      unsigned char *p;
      pay[0] = (unsigned char)(c >> 8);
      pay[1] = (unsigned char)c;
      p = guard_put(&g, pay, 2);
      code = 0;
      rc = ws_close_parse(p, 2, &code, &reason, &rlen);
      if (ws_close_code_valid(c) != ranges[i].valid ||
          rc != (ranges[i].valid ? WS_OK : WS_EPROTO) ||
          (rc == WS_OK && (code != c || rlen != 0))) {
        if (bad++ == 0) printf("    close code %u misclassified\n", c);
      }
    }
  }
  CHECK_INT(bad, 0);
  CHECK_INT(ws_close_code_valid(999), 0);
  CHECK_INT(ws_close_code_valid(1000), 1);
  CHECK_INT(ws_close_code_valid(1003), 1);
  CHECK_INT(ws_close_code_valid(1004), 0);
  CHECK_INT(ws_close_code_valid(1005), 0);
  CHECK_INT(ws_close_code_valid(1006), 0);
  CHECK_INT(ws_close_code_valid(1007), 1);
  CHECK_INT(ws_close_code_valid(1014), 1);
  CHECK_INT(ws_close_code_valid(1015), 0);
  CHECK_INT(ws_close_code_valid(2999), 0);
  CHECK_INT(ws_close_code_valid(3000), 1);
  CHECK_INT(ws_close_code_valid(4999), 1);
  CHECK_INT(ws_close_code_valid(5000), 0);
  CHECK_INT(ws_close_code_valid(65535), 0);
  CHECK_INT(ws_close_code_valid(65536 + 1000), 0);
  CHECK_INT(ws_close_code_valid(0xFFFFFFFFu), 0);

  /* The reason: points into the buffer, after the code. */
  {
    static const char msg[] = "\x03\xE8" "bye \xC3\xA9";
    unsigned char *p = guard_put(&g, msg, sizeof msg - 1);
    CHECK_INT(ws_close_parse(p, sizeof msg - 1, &code, &reason, &rlen),
              WS_OK);
    CHECK_INT(code, 1000);
    CHECK(reason == (const char *)p + 2);
    CHECK_INT(rlen, 6);
    CHECK_MEM(reason, "bye \xC3\xA9", 6);
  }
  /* Invalid UTF-8 in the reason, including a sequence cut by the end. */
  CHECK_INT(ws_close_parse(guard_put(&g, "\x03\xE8\xFF", 3), 3, &code,
                           &reason, &rlen),
            WS_EUTF8);
  CHECK_INT(ws_close_parse(guard_put(&g, "\x03\xE9" "ab\xC3", 5), 5, &code,
                           &reason, &rlen),
            WS_EUTF8);
  CHECK_INT(ws_close_parse(guard_put(&g, "\x0F\xA0\xED\xA0\x80", 5), 5,
                           &code, &reason, &rlen),
            WS_EUTF8);
  /* 125 bytes is the largest control payload; 126 is too long. */
  memset(pay, 'r', sizeof pay);
  pay[0] = 0x03;
  pay[1] = 0xE8;
  CHECK_INT(ws_close_parse(guard_put(&g, pay, 125), 125, &code, &reason,
                           &rlen),
            WS_OK);
  CHECK_INT(rlen, 123);
  CHECK_INT(ws_close_parse(guard_put(&g, pay, 126), 126, &code, &reason,
                           &rlen),
            WS_EPROTO);
  CHECK_INT(ws_close_parse(guard_put(&g, pay, 200), 200, &code, &reason,
                           &rlen),
            WS_EPROTO);
  /* Arguments. */
  CHECK_INT(ws_close_parse(pay, 2, NULL, &reason, &rlen), WS_EINVAL);
  CHECK_INT(ws_close_parse(pay, 2, &code, NULL, &rlen), WS_EINVAL);
  CHECK_INT(ws_close_parse(pay, 2, &code, &reason, NULL), WS_EINVAL);
  CHECK_INT(ws_close_parse(NULL, 2, &code, &reason, &rlen), WS_EINVAL);
  guard_free(&g);
}

/* ------------------------------------------------------------------------
 * 7. Handshake, server side
 * ---------------------------------------------------------------------- */

#define RQ_LINE "GET /chat HTTP/1.1\r\n"
#define RQ_HOST "Host: server.example.com\r\n"
#define RQ_UPG "Upgrade: websocket\r\n"
#define RQ_CONN "Connection: Upgrade\r\n"
#define RQ_KEY "Sec-WebSocket-Key: " RFC_KEY "\r\n"
#define RQ_VER "Sec-WebSocket-Version: 13\r\n"

typedef struct req_ok {
  const char *name;
  const char *text;
  const char *path, *host, *origin, *key;
  const char *protos[5]; /* offered subprotocols, NULL-terminated */
} req_ok;

static const req_ok req_ok_cases[] = {
    {"RFC 6455 section 1.2",
     "GET /chat HTTP/1.1\r\n"
     "Host: server.example.com\r\n"
     "Upgrade: websocket\r\n"
     "Connection: Upgrade\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
     "Origin: http://example.com\r\n"
     "Sec-WebSocket-Protocol: chat, superchat\r\n"
     "Sec-WebSocket-Version: 13\r\n"
     "\r\n",
     "/chat", "server.example.com", "http://example.com", RFC_KEY,
     {"chat", "superchat", NULL, NULL, NULL}},
    {"lower-case names, no origin, no protocol",
     "GET / HTTP/1.1\r\n"
     "host: a.example\r\n"
     "upgrade: websocket\r\n"
     "connection: upgrade\r\n"
     "sec-websocket-key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
     "sec-websocket-version: 13\r\n"
     "\r\n",
     "/", "a.example", NULL, "x3JJHMbDL1EzLkh9GBhXDw==",
     {NULL, NULL, NULL, NULL, NULL}},
    {"upper-case names, WebSocket, keep-alive, query string",
     "GET /chat?room=1&x=%20y HTTP/1.1\r\n"
     "HOST: a.example:8080\r\n"
     "UPGRADE: WebSocket\r\n"
     "CONNECTION: keep-alive, Upgrade\r\n"
     "SEC-WEBSOCKET-VERSION: 13\r\n"
     "SEC-WEBSOCKET-KEY: AAECAwQFBgcICQoLDA0ODw==\r\n"
     "ORIGIN: https://a.example\r\n"
     "\r\n",
     "/chat?room=1&x=%20y", "a.example:8080", "https://a.example",
     "AAECAwQFBgcICQoLDA0ODw==", {NULL, NULL, NULL, NULL, NULL}},
    {"spaces and tabs around values",
     "GET /x HTTP/1.1\r\n"
     "Host:a.example\r\n"
     "Upgrade: \t websocket \t\r\n"
     "Connection:\tkeep-alive ,\tUpgrade\r\n"
     "Sec-WebSocket-Key:   " RFC_KEY " \t\r\n"
     "Sec-WebSocket-Version:13 \r\n"
     "Origin:  null  \r\n"
     "Sec-WebSocket-Protocol:\t v1.chat \t\r\n"
     "\r\n",
     "/x", "a.example", "null", RFC_KEY, {"v1.chat", NULL, NULL, NULL, NULL}},
    {"several protocol headers, empty list elements",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN
     "Sec-WebSocket-Protocol: a\r\n"
     RQ_KEY
     "Sec-WebSocket-Protocol: b , c,,\r\n"
     "sec-websocket-protocol: ,d\r\n"
     RQ_VER "\r\n",
     "/chat", "server.example.com", NULL, RFC_KEY, {"a", "b", "c", "d", NULL}},
    {"Connection in two headers, Upgrade list, other headers",
     "GET /chat HTTP/1.1\r\n"
     "User-Agent: caf\xC3\xA9/1.0\r\n"
     "Host: [::1]:9001\r\n"
     "Connection: keep-alive\r\n"
     "Upgrade: h2c, websocket\r\n"
     "Connection: Upgrade\r\n"
     "X-Empty:\r\n"
     "Cookie: a=b; c=d\r\n"
     RQ_KEY RQ_VER "\r\n",
     "/chat", "[::1]:9001", NULL, RFC_KEY, {NULL, NULL, NULL, NULL, NULL}},
};

/* Header lines in a request head: its CRLFs minus the request line's and
 * the blank line's. */
static size_t count_headers(const char *text) {
  size_t n = 0;
  const char *p = text;
  while ((p = strstr(p, "\r\n")) != NULL) n++, p += 2;
  return n - 2;
}

static void test_request_valid(void) {
  guard g;
  size_t i;
  guard_init(&g);
  for (i = 0; i < sizeof req_ok_cases / sizeof req_ok_cases[0]; i++) {
    const req_ok *c = &req_ok_cases[i];
    size_t len = strlen(c->text), nh = count_headers(c->text), k, np, bad;
    ws_header hdrs[32];
    ws_request req;
    size_t consumed = 0;
    int status = 0, rc;
    const unsigned char *p = guard_put(&g, c->text, len);
    const ws_header *h;
    unsigned long failed = t_failed;
    rc = ws_request_parse(p, len, &req, hdrs, 32, &consumed, &status);
    CHECK_INT(rc, WS_OK);
    CHECK_INT(status, 101);
    CHECK_INT(consumed, len);
    CHECK_SPAN(req.method, req.method_len, "GET");
    CHECK_SPAN(req.path, req.path_len, c->path);
    CHECK_SPAN(req.host, req.host_len, c->host);
    if (c->origin)
      CHECK_SPAN(req.origin, req.origin_len, c->origin);
    else
      CHECK(req.origin == NULL && req.origin_len == 0);
    CHECK_SPAN(req.key, req.key_len, c->key);
    CHECK_INT(req.minor_version, 1);
    CHECK_INT(req.upgrade, 1);
    CHECK(req.headers == hdrs);
    CHECK_INT(req.num_headers, nh);
    /* Pointers lie inside the buffer. */
    CHECK(req.path > (const char *)p &&
          req.key + req.key_len < (const char *)p + len);
    for (np = 0; c->protos[np]; np++) {
      const char *name = NULL;
      size_t nlen = 0;
      CHECK_INT(ws_request_protocol(&req, np, &name, &nlen), WS_OK);
      CHECK_SPAN(name, nlen, c->protos[np]);
    }
    CHECK_INT(ws_request_protocol_count(&req), np);
    {
      const char *name = NULL;
      size_t nlen = 0;
      CHECK_INT(ws_request_protocol(&req, np, &name, &nlen), WS_EINVAL);
      CHECK_INT(ws_request_protocol(&req, (size_t)-1, &name, &nlen),
                WS_EINVAL);
    }
    h = ws_request_header(&req, "hOsT");
    CHECK(h != NULL);
    if (h) CHECK_SPAN(h->value, h->value_len, c->host);
    h = ws_request_header(&req, "sec-websocket-version");
    CHECK(h != NULL);
    if (h) CHECK_SPAN(h->value, h->value_len, "13");
    CHECK(ws_request_header(&req, "X-Missing") == NULL);
    CHECK(ws_request_header(&req, "Hos") == NULL);
    CHECK(ws_request_header(&req, "Hostx") == NULL);

    /* Exactly max_headers headers fit; one more is 431. */
    CHECK_INT(ws_request_parse(p, len, &req, hdrs, nh, &consumed, &status),
              WS_OK);
    CHECK_INT(ws_request_parse(p, len, &req, hdrs, nh - 1, &consumed,
                               &status),
              WS_EHANDSHAKE);
    CHECK_INT(status, 431);

    /* Every proper prefix needs more bytes. */
    bad = 0;
    for (k = 0; k < len; k++) {
      rc = ws_request_parse(guard_put(&g, c->text, k), k, &req, hdrs, 32,
                            &consumed, &status);
      if (rc != WS_EAGAIN && bad++ == 0)
        printf("    prefix %u: %s\n", (unsigned)k, ws_errname(rc));
    }
    CHECK_INT(bad, 0);

    /* Bytes after the head (a pipelined frame) are not consumed. */
    {
      static const char more[] =
          "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58\r\n\r\n";
      unsigned char buf[1024];
      memcpy(buf, c->text, len);
      memcpy(buf + len, more, sizeof more - 1);
      p = guard_put(&g, buf, len + sizeof more - 1);
      consumed = 0;
      CHECK_INT(ws_request_parse(p, len + sizeof more - 1, &req, hdrs, 32,
                                 &consumed, &status),
                WS_OK);
      CHECK_INT(consumed, len);
      CHECK_SPAN(req.key, req.key_len, c->key);
    }
    if (t_failed != failed) printf("    (request: %s)\n", c->name);
  }
  guard_free(&g);
}

typedef struct req_bad {
  const char *name;
  const char *text;
  size_t max_headers;
  int status;
  int upgrade;      /* the expected req->upgrade, or -1: not checked */
  const char *path; /* the expected req->path, or NULL: not checked */
} req_bad;

static const req_bad req_bad_cases[] = {
    {"POST",
     "POST /chat HTTP/1.1\r\n" RQ_HOST RQ_UPG RQ_CONN RQ_KEY RQ_VER "\r\n", 32,
     400, 1, "/chat"},
    {"lower-case method",
     "get /chat HTTP/1.1\r\n" RQ_HOST RQ_UPG RQ_CONN RQ_KEY RQ_VER "\r\n", 32,
     400, 1, "/chat"},
    {"HTTP/1.0",
     "GET /chat HTTP/1.0\r\n" RQ_HOST RQ_UPG RQ_CONN RQ_KEY RQ_VER "\r\n", 32,
     400, 1, "/chat"},
    {"missing Host", RQ_LINE RQ_UPG RQ_CONN RQ_KEY RQ_VER "\r\n", 32, 400, -1,
     NULL},
    {"two Host headers",
     RQ_LINE RQ_HOST RQ_UPG "Host: evil.example\r\n" RQ_CONN RQ_KEY RQ_VER
     "\r\n",
     32, 400, -1, NULL},
    {"plain GET, no Upgrade",
     "GET /index.html HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\n\r\n", 32,
     400, 0, "/index.html"},
    {"missing Upgrade", RQ_LINE RQ_HOST RQ_CONN RQ_KEY RQ_VER "\r\n", 32, 400,
     0, "/chat"},
    {"Upgrade: websockets",
     RQ_LINE RQ_HOST "Upgrade: websockets\r\n" RQ_CONN RQ_KEY RQ_VER "\r\n", 32,
     400, 0, "/chat"},
    {"Upgrade: h2c",
     RQ_LINE RQ_HOST "Upgrade: h2c\r\n" RQ_CONN RQ_KEY RQ_VER "\r\n", 32, 400,
     0, "/chat"},
    {"Upgrade: web socket",
     RQ_LINE RQ_HOST "Upgrade: web socket\r\n" RQ_CONN RQ_KEY RQ_VER "\r\n", 32,
     400, 0, "/chat"},
    {"missing Connection", RQ_LINE RQ_HOST RQ_UPG RQ_KEY RQ_VER "\r\n", 32, 400,
     1, "/chat"},
    {"Connection: keep-alive",
     RQ_LINE RQ_HOST RQ_UPG "Connection: keep-alive\r\n" RQ_KEY RQ_VER "\r\n",
     32, 400, 1, "/chat"},
    {"Connection: Upgraded",
     RQ_LINE RQ_HOST RQ_UPG "Connection: Upgraded\r\n" RQ_KEY RQ_VER "\r\n", 32,
     400, 1, "/chat"},
    {"Upgrade token in the wrong header",
     RQ_LINE RQ_HOST RQ_UPG "Keep-Alive: Upgrade\r\n" RQ_KEY RQ_VER "\r\n", 32,
     400, 1, "/chat"},
    {"key of 15 bytes",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN
     "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n" RQ_VER "\r\n",
     32, 400, 1, "/chat"},
    {"key of 17 bytes",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN
     "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=\r\n" RQ_VER "\r\n",
     32, 400, 1, "/chat"},
    {"key of 18 bytes",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN
     "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAA\r\n" RQ_VER "\r\n",
     32, 400, 1, "/chat"},
    {"key not base64",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ!!\r\n" RQ_VER "\r\n",
     32, 400, 1, "/chat"},
    {"key with non-zero unused bits",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n" RQ_VER "\r\n",
     32, 400, 1, "/chat"},
    {"key with a space inside",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN
     "Sec-WebSocket-Key: dGhlIHNhbXBs ZSBub25jZQ==\r\n" RQ_VER "\r\n",
     32, 400, 1, "/chat"},
    {"empty key",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN "Sec-WebSocket-Key:\r\n" RQ_VER "\r\n", 32,
     400, 1, "/chat"},
    {"missing key", RQ_LINE RQ_HOST RQ_UPG RQ_CONN RQ_VER "\r\n", 32, 400, 1,
     "/chat"},
    {"two keys",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN RQ_KEY
     "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n" RQ_VER "\r\n",
     32, 400, 1, "/chat"},
    {"two identical keys",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN RQ_KEY RQ_KEY RQ_VER "\r\n", 32, 400, 1,
     "/chat"},
    {"missing version", RQ_LINE RQ_HOST RQ_UPG RQ_CONN RQ_KEY "\r\n", 32, 400,
     1, "/chat"},
    {"version 8",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN RQ_KEY "Sec-WebSocket-Version: 8\r\n\r\n",
     32, 426, 1, "/chat"},
    {"version 13, 8",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN RQ_KEY
     "Sec-WebSocket-Version: 13, 8\r\n\r\n",
     32, 426, 1, "/chat"},
    {"version 130",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN RQ_KEY "Sec-WebSocket-Version: 130\r\n\r\n",
     32, 426, 1, "/chat"},
    {"two version headers",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN RQ_KEY RQ_VER
     "Sec-WebSocket-Version: 8\r\n\r\n",
     32, 426, 1, "/chat"},
    {"too many headers", RQ_LINE RQ_HOST RQ_UPG RQ_CONN RQ_KEY RQ_VER "\r\n", 4,
     431, -1, NULL},
    {"too many headers, none allowed",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN RQ_KEY RQ_VER "\r\n", 0, 431, -1, NULL},
    {"header line without colon",
     RQ_LINE RQ_HOST "Upgrade websocket\r\n" RQ_CONN RQ_KEY RQ_VER "\r\n", 32,
     400, -1, NULL},
    {"space before the colon",
     RQ_LINE "Host : server.example.com\r\n" RQ_UPG RQ_CONN RQ_KEY RQ_VER
     "\r\n",
     32, 400, -1, NULL},
    {"space inside a header name",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN "Sec WebSocket-Key: " RFC_KEY "\r\n" RQ_VER
     "\r\n",
     32, 400, -1, NULL},
    {"empty header name",
     RQ_LINE RQ_HOST ": x\r\n" RQ_UPG RQ_CONN RQ_KEY RQ_VER "\r\n", 32, 400, -1,
     NULL},
    {"obs-fold continuation line",
     RQ_LINE RQ_HOST RQ_UPG "Connection: keep-alive,\r\n Upgrade\r\n" RQ_KEY
     RQ_VER "\r\n",
     32, 400, -1, NULL},
    {"obs-fold with a tab and a colon",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN "X-A: b\r\n\tX-C: d\r\n" RQ_KEY RQ_VER
     "\r\n",
     32, 400, -1, NULL},
    {"control character in a value",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN "User-Agent: a\x01" "b\r\n" RQ_KEY RQ_VER
     "\r\n",
     32, 400, -1, NULL},
    {"DEL in a value",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN "User-Agent: a\x7F" "b\r\n" RQ_KEY RQ_VER
     "\r\n",
     32, 400, -1, NULL},
    {"bare CR in a value",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN "User-Agent: a\rb\r\n" RQ_KEY RQ_VER "\r\n",
     32, 400, -1, NULL},
    {"bare LF inside a header line",
     RQ_LINE RQ_HOST RQ_UPG RQ_CONN "User-Agent: a\nb\r\n" RQ_KEY RQ_VER "\r\n",
     32, 400, -1, NULL},
    {"bare LF after the request line",
     "GET /chat HTTP/1.1\n" RQ_HOST RQ_UPG RQ_CONN RQ_KEY RQ_VER "\r\n", 32,
     400, -1, NULL},
    {"bare CR ending the request line hides a byte",
     "GET /chat HTTP/1.1\rX" RQ_HOST RQ_UPG RQ_CONN RQ_KEY RQ_VER "\r\n", 32,
     400, -1, NULL},
    {"bare LF line endings",
     "GET /chat HTTP/1.1\n"
     "Host: server.example.com\n"
     "Upgrade: websocket\n"
     "Connection: Upgrade\n"
     "Sec-WebSocket-Key: " RFC_KEY "\n"
     "Sec-WebSocket-Version: 13\n"
     "\n",
     32, 400, -1, NULL},
    {"two spaces in the request line",
     "GET  /chat HTTP/1.1\r\n" RQ_HOST RQ_UPG RQ_CONN RQ_KEY RQ_VER "\r\n", 32,
     400, -1, NULL},
    {"space inside the target",
     "GET /a b HTTP/1.1\r\n" RQ_HOST RQ_UPG RQ_CONN RQ_KEY RQ_VER "\r\n", 32,
     400, -1, NULL},
    {"control character in the target",
     "GET /a\x01" "b HTTP/1.1\r\n" RQ_HOST RQ_UPG RQ_CONN RQ_KEY RQ_VER "\r\n",
     32, 400, -1, NULL},
    {"no HTTP version", "GET /chat\r\n" RQ_HOST RQ_UPG RQ_CONN RQ_KEY RQ_VER
     "\r\n", 32, 400, -1, NULL},
    {"space after the version",
     "GET /chat HTTP/1.1 \r\n" RQ_HOST RQ_UPG RQ_CONN RQ_KEY RQ_VER "\r\n", 32,
     400, -1, NULL},
    {"HTTP/1.x", "GET /chat HTTP/1.x\r\n" RQ_HOST RQ_UPG RQ_CONN RQ_KEY RQ_VER
     "\r\n", 32, 400, -1, NULL},
    {"http/1.1 in lower case",
     "GET /chat http/1.1\r\n" RQ_HOST RQ_UPG RQ_CONN RQ_KEY RQ_VER "\r\n", 32,
     400, -1, NULL},
    {"HTTP/2.0", "GET /chat HTTP/2.0\r\n" RQ_HOST RQ_UPG RQ_CONN RQ_KEY RQ_VER
     "\r\n", 32, 400, -1, NULL},
    {"HTTP/2 connection preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 32, 400,
     -1, NULL},
};

static void test_request_invalid(void) {
  guard g;
  size_t i;
  guard_init(&g);
  for (i = 0; i < sizeof req_bad_cases / sizeof req_bad_cases[0]; i++) {
    const req_bad *c = &req_bad_cases[i];
    size_t len = strlen(c->text), consumed = 0, k, early = 0;
    ws_header hdrs[32];
    ws_request req;
    int status = 0, rc;
    rc = ws_request_parse(guard_put(&g, c->text, len), len, &req, hdrs,
                          c->max_headers, &consumed, &status);
    if (!t_check(rc == WS_EHANDSHAKE && status == c->status, __FILE__,
                 __LINE__, "request rejected with its status"))
      printf("    %s: got %s, status %d; want EHANDSHAKE, %d\n", c->name,
             ws_errname(rc), status, c->status);
    if (c->upgrade >= 0 && !t_check(req.upgrade == c->upgrade, __FILE__,
                                    __LINE__, "req.upgrade"))
      printf("    %s: upgrade %d\n", c->name, req.upgrade);
    if (c->path && !t_check(same(req.path, req.path_len, c->path), __FILE__,
                            __LINE__, "req.path filled"))
      printf("    %s\n", c->name);
    /* No prefix of an invalid request is accepted. */
    for (k = 0; k < len; k++) {
      rc = ws_request_parse(guard_put(&g, c->text, k), k, &req, hdrs,
                            c->max_headers, &consumed, &status);
      if (rc != WS_EAGAIN && rc != WS_EHANDSHAKE) early++;
    }
    if (!t_check(early == 0, __FILE__, __LINE__, "no prefix accepted"))
      printf("    %s\n", c->name);
  }
  guard_free(&g);
}

static void test_header_name_bytes(void) {
  /* A header name is a token (RFC 9110 tchar): every byte value, in the
   * middle of a name, is accepted exactly when it is a tchar. */
  static const char *tchars = "!#$%&'*+-.^_`|~";
  int c;
  for (c = 1; c < 256; c++) {
    char text[256];
    ws_header hdrs[32];
    ws_request req;
    size_t consumed = 0;
    int status = 0, rc, want;
    if (c == ':' || c == '\r' || c == '\n') continue;
    want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || (c < 128 && strchr(tchars, c) != NULL);
    sprintf(text,
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX%cY: v\r\n\r\n",
            c);
    rc = ws_request_parse(text, strlen(text), &req, hdrs, 32, &consumed,
                          &status);
    if (!t_check(want ? rc == WS_OK : rc == WS_EHANDSHAKE && status == 400,
                 __FILE__, __LINE__, "header name byte"))
      printf("    byte %d: %s, status %d\n", c, ws_errname(rc), status);
  }
}

typedef struct garbage {
  const char *name;
  const char *text;
  size_t len;
  size_t at; /* the shortest prefix that already fails */
} garbage;

static void test_request_garbage(void) {
  static const garbage cases[] = {
      {"TLS ClientHello", BYTES("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
       1},
      {"NUL bytes", BYTES("\x00\x00\x00\x00"), 1},
      {"SSLv2 hello", BYTES("\x80\x2e\x01\x00\x02"), 1},
      {"DEL in the method", BYTES("GE\x7FT / HTTP/1.1\r\n"), 3},
      {"CR in the method", BYTES("GET\r\nHost: x\r\n"), 4},
      {"SSH banner", BYTES("SSH-2.0-OpenSSH_9.6\r\n"), 20},
      {"a JSON body", BYTES("{\"a\":1}"), 1},
  };
  guard g;
  size_t i, k;
  guard_init(&g);
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const garbage *c = &cases[i];
    size_t bad = 0;
    for (k = 0; k <= c->len; k++) {
      ws_header hdrs[8];
      ws_request req;
      size_t consumed = 0;
      int status = 0, rc;
      rc = ws_request_parse(guard_put(&g, c->text, k), k, &req, hdrs, 8,
                            &consumed, &status);
      if (rc != (k < c->at ? WS_EAGAIN : WS_EHANDSHAKE) ||
          (rc == WS_EHANDSHAKE && status != 400))
        bad++;
    }
    if (!t_check(bad == 0, __FILE__, __LINE__, "request garbage fails fast"))
      printf("    %s\n", c->name);
  }
  /* Arguments. */
  {
    ws_header hdrs[8];
    ws_request req;
    size_t consumed;
    int status;
    CHECK_INT(ws_request_parse("GET", 3, NULL, hdrs, 8, &consumed, &status),
              WS_EINVAL);
    CHECK_INT(ws_request_parse("GET", 3, &req, hdrs, 8, NULL, &status),
              WS_EINVAL);
    CHECK_INT(ws_request_parse("GET", 3, &req, hdrs, 8, &consumed, NULL),
              WS_EINVAL);
    CHECK_INT(ws_request_parse(NULL, 3, &req, hdrs, 8, &consumed, &status),
              WS_EINVAL);
    CHECK_INT(ws_request_parse("GET", 3, &req, NULL, 8, &consumed, &status),
              WS_EINVAL);
    CHECK_INT(ws_request_protocol_count(NULL), 0);
    CHECK(ws_request_header(NULL, "host") == NULL);
  }
  guard_free(&g);
}

/* Every cap below the needed size is WS_ENOSPC (writing only inside cap:
 * out ends at the unreadable page); the exact size is WS_OK with the
 * caller's olen set to it. `call` writes into `out` with room `cap`. */
#define CHECK_CAPS(g, need, call)                                          \
  do {                                                                     \
    size_t t_cap_, t_bad_ = 0;                                             \
    for (t_cap_ = 0; t_cap_ <= (need); t_cap_++) {                         \
      unsigned char *out = guard_at((g), t_cap_);                          \
      size_t cap = t_cap_;                                                 \
      int t_rc_;                                                           \
      olen = 0;                                                            \
      t_rc_ = (call);                                                      \
      if (t_rc_ != (t_cap_ < (need) ? WS_ENOSPC : WS_OK)) t_bad_++;        \
      if (t_rc_ == WS_OK && olen != (need)) t_bad_++;                      \
    }                                                                      \
    CHECK_INT(t_bad_, 0);                                                  \
  } while (0)

static void test_response_write(void) {
  static const char want_plain[] =
      "HTTP/1.1 101 Switching Protocols\r\n"
      "Upgrade: websocket\r\n"
      "Connection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
      "\r\n";
  static const char want_full[] =
      "HTTP/1.1 101 Switching Protocols\r\n"
      "Upgrade: websocket\r\n"
      "Connection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
      "Sec-WebSocket-Protocol: chat\r\n"
      "Server: ws\r\n"
      "X-Empty: \r\n"
      "Set-Cookie: a=b; Path=/\r\n"
      "\r\n";
  static const ws_header extra[] = {{"Server", 6, "ws", 2},
                                    {"X-Empty", 7, NULL, 0},
                                    {"Set-Cookie", 10, "a=b; Path=/", 11}};
  static const struct {
    const char *name;
    ws_header h;
  } bad_headers[] = {
      {"CR in a value", {"X-A", 3, "a\rb", 3}},
      {"LF in a value", {"X-A", 3, "a\nb", 3}},
      {"CRLF injection", {"X-A", 3, "a\r\nSet-Cookie: x=y", 19}},
      {"NUL in a value", {"X-A", 3, "a\0b", 3}},
      {"space in a name", {"X A", 3, "b", 1}},
      {"colon in a name", {"X-A:", 4, "b", 1}},
      {"empty name", {"", 0, "b", 1}},
      {"NULL name", {NULL, 0, "b", 1}},
      {"CR in a name", {"X\r\nA", 4, "b", 1}},
      {"NULL value with a length", {"X-A", 3, NULL, 1}},
  };
  static const char *const bad_protocols[] = {"", "a b", "a,b", "chat\r\n",
                                              "a\"b", "a/b", "(x)"};
  char buf[512], big[65];
  size_t olen = 0, i;
  ws_header one;
  guard g;
  guard_init(&g);

  CHECK_INT(ws_response_write(buf, sizeof buf, RFC_KEY, 24, NULL, NULL, 0,
                              &olen),
            WS_OK);
  CHECK_INT(olen, sizeof want_plain - 1);
  CHECK_MEM(buf, want_plain, sizeof want_plain - 1);
  CHECK_INT(ws_response_write(buf, sizeof buf, RFC_KEY, 24, "chat", extra, 3,
                              &olen),
            WS_OK);
  CHECK_INT(olen, sizeof want_full - 1);
  CHECK_MEM(buf, want_full, sizeof want_full - 1);
  /* What the server writes, the client accepts. */
  {
    ws_header hdrs[16];
    ws_response resp;
    size_t consumed = 0;
    CHECK_INT(ws_response_parse(buf, olen, rfc_nonce, "superchat, chat", 15,
                                &resp, hdrs, 16, &consumed),
              WS_OK);
    CHECK_INT(consumed, olen);
    CHECK_SPAN(resp.protocol, resp.protocol_len, "chat");
  }
  CHECK_CAPS(&g, sizeof want_plain - 1,
             ws_response_write(out, cap, RFC_KEY, 24, NULL, NULL, 0, &olen));
  CHECK_CAPS(&g, sizeof want_full - 1,
             ws_response_write(out, cap, RFC_KEY, 24, "chat", extra, 3,
                               &olen));

  for (i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++) {
    int rc;
    one = bad_headers[i].h;
    rc = ws_response_write(buf, sizeof buf, RFC_KEY, 24, NULL, &one, 1, &olen);
    if (!t_check(rc == WS_EINVAL, __FILE__, __LINE__,
                 "response header refused"))
      printf("    %s: %s\n", bad_headers[i].name, ws_errname(rc));
  }
  for (i = 0; i < sizeof bad_protocols / sizeof bad_protocols[0]; i++) {
    int rc = ws_response_write(buf, sizeof buf, RFC_KEY, 24, bad_protocols[i],
                               NULL, 0, &olen);
    if (!t_check(rc == WS_EINVAL, __FILE__, __LINE__,
                 "response protocol refused"))
      printf("    \"%s\": %s\n", bad_protocols[i], ws_errname(rc));
  }
  CHECK_INT(ws_response_write(buf, sizeof buf, RFC_KEY, 24, NULL, NULL, 1,
                              &olen),
            WS_EINVAL);
  memset(big, 'A', sizeof big);
  CHECK_INT(ws_response_write(buf, sizeof buf, big, 64, NULL, NULL, 0, &olen),
            WS_OK);
  CHECK_INT(ws_response_write(buf, sizeof buf, big, 65, NULL, NULL, 0, &olen),
            WS_EINVAL);
  CHECK_INT(ws_response_write(NULL, 10, RFC_KEY, 24, NULL, NULL, 0, &olen),
            WS_EINVAL);
  CHECK_INT(ws_response_write(buf, sizeof buf, NULL, 0, NULL, NULL, 0, &olen),
            WS_EINVAL);
  CHECK_INT(ws_response_write(buf, sizeof buf, RFC_KEY, 24, NULL, NULL, 0,
                              NULL),
            WS_EINVAL);
  guard_free(&g);
}

static void test_http_error_write(void) {
  static const struct {
    int status;
    const char *want;
  } cases[] = {
      {400, "HTTP/1.1 400 Bad Request\r\n"
            "Connection: close\r\nContent-Length: 0\r\n\r\n"},
      {426, "HTTP/1.1 426 Upgrade Required\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "Connection: close\r\nContent-Length: 0\r\n\r\n"},
      {431, "HTTP/1.1 431 Request Header Fields Too Large\r\n"
            "Connection: close\r\nContent-Length: 0\r\n\r\n"},
      {403, "HTTP/1.1 403 Forbidden\r\n"
            "Connection: close\r\nContent-Length: 0\r\n\r\n"},
      {503, "HTTP/1.1 503 Service Unavailable\r\n"
            "Connection: close\r\nContent-Length: 0\r\n\r\n"},
  };
  static const int bad[] = {0, -1, 101, 200, 399, 600, 1000, -400};
  char buf[256];
  size_t olen = 0, i;
  guard g;
  guard_init(&g);
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t n = strlen(cases[i].want);
    CHECK_INT(ws_http_error_write(buf, sizeof buf, cases[i].status, &olen),
              WS_OK);
    CHECK_INT(olen, n);
    CHECK_MEM(buf, cases[i].want, n);
    CHECK_CAPS(&g, n, ws_http_error_write(out, cap, cases[i].status, &olen));
  }
  /* Any status 400..599, with some reason phrase. */
  CHECK_INT(ws_http_error_write(buf, sizeof buf, 599, &olen), WS_OK);
  CHECK(olen > 13 && memcmp(buf, "HTTP/1.1 599 ", 13) == 0);
  CHECK_INT(ws_http_error_write(buf, sizeof buf, 499, &olen), WS_OK);
  CHECK(olen > 13 && memcmp(buf, "HTTP/1.1 499 ", 13) == 0);
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK_INT(ws_http_error_write(buf, sizeof buf, bad[i], &olen), WS_EINVAL);
  CHECK_INT(ws_http_error_write(NULL, 10, 400, &olen), WS_EINVAL);
  CHECK_INT(ws_http_error_write(buf, sizeof buf, 400, NULL), WS_EINVAL);
  guard_free(&g);
}

/* ------------------------------------------------------------------------
 * 8. Handshake, client side
 * ---------------------------------------------------------------------- */

typedef struct creq_case {
  const char *name;
  const char *host, *path, *origin, *protocols;
  const ws_header *headers;
  size_t num_headers;
  int rc;
  const char *want; /* the exact request when rc is WS_OK */
} creq_case;

static const ws_header creq_x[] = {{"X-Test", 6, "1", 1},
                                   {"Cookie", 6, "a=b; c=d", 8}};
static const ws_header creq_bad_name[] = {{"X Test", 6, "1", 1}};
static const ws_header creq_bad_value[] = {{"X-Test", 6, "1\r\nX-Evil: 2", 13}};
static const ws_header creq_nul_value[] = {{"X-Test", 6, "1\0" "2", 3}};

static const creq_case creq_cases[] = {
    {"everything", "server.example.com", "/chat", "http://example.com",
     "chat, superchat", creq_x, 2, WS_OK,
     "GET /chat HTTP/1.1\r\n"
     "Host: server.example.com\r\n"
     "Upgrade: websocket\r\n"
     "Connection: Upgrade\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
     "Sec-WebSocket-Version: 13\r\n"
     "Origin: http://example.com\r\n"
     "Sec-WebSocket-Protocol: chat, superchat\r\n"
     "X-Test: 1\r\n"
     "Cookie: a=b; c=d\r\n"
     "\r\n"},
    {"minimal, NULL path", "a.example:8080", NULL, NULL, NULL, NULL, 0, WS_OK,
     "GET / HTTP/1.1\r\n"
     "Host: a.example:8080\r\n"
     "Upgrade: websocket\r\n"
     "Connection: Upgrade\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
     "Sec-WebSocket-Version: 13\r\n"
     "\r\n"},
    {"query string, one protocol", "[::1]:9001", "/a/b?c=d&e=%20", NULL,
     "v1.chat", NULL, 0, WS_OK,
     "GET /a/b?c=d&e=%20 HTTP/1.1\r\n"
     "Host: [::1]:9001\r\n"
     "Upgrade: websocket\r\n"
     "Connection: Upgrade\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
     "Sec-WebSocket-Version: 13\r\n"
     "Sec-WebSocket-Protocol: v1.chat\r\n"
     "\r\n"},
    {"NULL host", NULL, "/", NULL, NULL, NULL, 0, WS_EINVAL, NULL},
    {"empty host", "", "/", NULL, NULL, NULL, 0, WS_EINVAL, NULL},
    {"space in host", "a b", "/", NULL, NULL, NULL, 0, WS_EINVAL, NULL},
    {"CRLF in host", "a\r\nX-Evil: 1", "/", NULL, NULL, NULL, 0, WS_EINVAL,
     NULL},
    {"LF in host", "a\n", "/", NULL, NULL, NULL, 0, WS_EINVAL, NULL},
    {"space in path", "a", "/a b", NULL, NULL, NULL, 0, WS_EINVAL, NULL},
    {"CRLF in path", "a", "/a\r\nX: y", NULL, NULL, NULL, 0, WS_EINVAL, NULL},
    {"tab in path", "a", "/a\tb", NULL, NULL, NULL, 0, WS_EINVAL, NULL},
    {"CRLF in origin", "a", "/", "http://x\r\nX: y", NULL, NULL, 0, WS_EINVAL,
     NULL},
    {"LF in origin", "a", "/", "http://x\n", NULL, NULL, 0, WS_EINVAL, NULL},
    {"space inside a protocol", "a", "/", NULL, "chat superchat", NULL, 0,
     WS_EINVAL, NULL},
    {"semicolon in a protocol", "a", "/", NULL, "a;b", NULL, 0, WS_EINVAL,
     NULL},
    {"CRLF after a protocol", "a", "/", NULL, "a\r\n", NULL, 0, WS_EINVAL,
     NULL},
    {"bad second protocol", "a", "/", NULL, "a, b c", NULL, 0, WS_EINVAL,
     NULL},
    {"quoted protocol", "a", "/", NULL, "a, \"b\"", NULL, 0, WS_EINVAL, NULL},
    {"bad header name", "a", "/", NULL, NULL, creq_bad_name, 1, WS_EINVAL,
     NULL},
    {"CRLF in a header value", "a", "/", NULL, NULL, creq_bad_value, 1,
     WS_EINVAL, NULL},
    {"NUL in a header value", "a", "/", NULL, NULL, creq_nul_value, 1,
     WS_EINVAL, NULL},
    {"NULL headers with a count", "a", "/", NULL, NULL, NULL, 1, WS_EINVAL,
     NULL},
};

static void test_client_request_write(void) {
  static const struct {
    uint8_t fill; /* 0x00, 0xFF, or 1: bytes 0..15 */
    const char *key;
  } nonces[] = {{0x00, "AAAAAAAAAAAAAAAAAAAAAA=="},
                {0xFF, "/////////////////////w=="},
                {1, "AAECAwQFBgcICQoLDA0ODw=="}};
  char buf[1024];
  size_t olen = 0, i, k;
  guard g;
  guard_init(&g);
  for (i = 0; i < sizeof creq_cases / sizeof creq_cases[0]; i++) {
    const creq_case *c = &creq_cases[i];
    ws_client_opts o;
    int rc;
    o.host = c->host;
    o.path = c->path;
    o.origin = c->origin;
    o.protocols = c->protocols;
    o.headers = c->headers;
    o.num_headers = c->num_headers;
    olen = 0;
    rc = ws_client_request_write(buf, sizeof buf, &o, rfc_nonce, &olen);
    if (!t_check(rc == c->rc, __FILE__, __LINE__, "client request status"))
      printf("    %s: got %s\n", c->name, ws_errname(rc));
    if (c->rc != WS_OK || rc != WS_OK) continue;
    CHECK_INT(olen, strlen(c->want));
    CHECK_MEM(buf, c->want, strlen(c->want));
    CHECK_CAPS(&g, strlen(c->want),
               ws_client_request_write(out, cap, &o, rfc_nonce, &olen));
    /* What the client writes, the server accepts. */
    {
      ws_header hdrs[16];
      ws_request req;
      size_t consumed = 0;
      int status = 0;
      CHECK_INT(ws_request_parse(buf, olen, &req, hdrs, 16, &consumed,
                                 &status),
                WS_OK);
      CHECK_INT(status, 101);
      CHECK_SPAN(req.key, req.key_len, RFC_KEY);
      CHECK_SPAN(req.host, req.host_len, c->host);
      CHECK_SPAN(req.path, req.path_len, c->path ? c->path : "/");
    }
  }
  /* The key is the base64 of the nonce. */
  for (i = 0; i < sizeof nonces / sizeof nonces[0]; i++) {
    uint8_t nonce[16];
    ws_client_opts o;
    const char *kp;
    memset(&o, 0, sizeof o);
    o.host = "h";
    for (k = 0; k < 16; k++)
      nonce[k] = nonces[i].fill == 1 ? (uint8_t)k : nonces[i].fill;
    CHECK_INT(ws_client_request_write(buf, sizeof buf - 1, &o, nonce, &olen),
              WS_OK);
    buf[olen] = '\0';
    kp = strstr(buf, "Sec-WebSocket-Key: ");
    CHECK(kp != NULL);
    if (kp == NULL) continue;
    kp += 19;
    CHECK_MEM(kp, nonces[i].key, 24);
    CHECK_MEM(kp + 24, "\r\n", 2);
    CHECK(ws__key_ok(kp, 24));
  }
  /* Arguments. */
  {
    ws_client_opts o;
    memset(&o, 0, sizeof o);
    o.host = "h";
    CHECK_INT(ws_client_request_write(NULL, 10, &o, rfc_nonce, &olen),
              WS_EINVAL);
    CHECK_INT(ws_client_request_write(buf, sizeof buf, NULL, rfc_nonce, &olen),
              WS_EINVAL);
    CHECK_INT(ws_client_request_write(buf, sizeof buf, &o, NULL, &olen),
              WS_EINVAL);
    CHECK_INT(ws_client_request_write(buf, sizeof buf, &o, rfc_nonce, NULL),
              WS_EINVAL);
  }
  guard_free(&g);
}

#define RS_LINE "HTTP/1.1 101 Switching Protocols\r\n"
#define RS_UPG "Upgrade: websocket\r\n"
#define RS_CONN "Connection: Upgrade\r\n"
#define RS_ACC "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"

typedef struct resp_case {
  const char *name;
  const char *text;
  const char *offered; /* the protocols the client offered, or NULL */
  int rc;
  int status;           /* the expected resp->status */
  const char *protocol; /* the expected chosen protocol, or NULL: none */
} resp_case;

static const resp_case resp_cases[] = {
    /* accepted */
    {"canonical", RS_LINE RS_UPG RS_CONN RS_ACC "\r\n", NULL, WS_OK, 101, NULL},
    {"canonical, protocols offered but none chosen",
     RS_LINE RS_UPG RS_CONN RS_ACC "\r\n", "chat", WS_OK, 101, NULL},
    {"lower-case names and values",
     "HTTP/1.1 101 Switching Protocols\r\n"
     "upgrade: WebSocket\r\n"
     "connection: upgrade\r\n"
     "sec-websocket-accept: " RFC_ACCEPT "\r\n\r\n",
     NULL, WS_OK, 101, NULL},
    {"upper-case names",
     "HTTP/1.1 101 Switching Protocols\r\n"
     "UPGRADE: WEBSOCKET\r\n"
     "CONNECTION: UPGRADE\r\n"
     "SEC-WEBSOCKET-ACCEPT: " RFC_ACCEPT "\r\n\r\n",
     NULL, WS_OK, 101, NULL},
    {"no reason phrase", "HTTP/1.1 101\r\n" RS_UPG RS_CONN RS_ACC "\r\n", NULL,
     WS_OK, 101, NULL},
    {"another reason phrase",
     "HTTP/1.1 101 OK\r\n" RS_ACC RS_CONN RS_UPG "\r\n", NULL, WS_OK, 101,
     NULL},
    {"extra headers, Connection list, spaces",
     RS_LINE "Server: x/1\r\n" RS_UPG "Connection: keep-alive,  Upgrade\r\n"
     "Sec-WebSocket-Accept: \t" RFC_ACCEPT "  \r\n\r\n",
     NULL, WS_OK, 101, NULL},
    {"chosen protocol", RS_LINE RS_UPG RS_CONN RS_ACC
     "Sec-WebSocket-Protocol: superchat\r\n\r\n",
     "chat, superchat", WS_OK, 101, "superchat"},
    {"chosen protocol, first offered", RS_LINE RS_UPG RS_CONN
     "sec-websocket-protocol: chat\r\n" RS_ACC "\r\n",
     "chat,superchat", WS_OK, 101, "chat"},
    /* refused */
    {"200", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", NULL,
     WS_EHANDSHAKE, 200, NULL},
    {"400", "HTTP/1.1 400 Bad Request\r\n\r\n", NULL, WS_EHANDSHAKE, 400,
     NULL},
    {"302 with the right headers",
     "HTTP/1.1 302 Found\r\nLocation: /x\r\n" RS_UPG RS_CONN RS_ACC "\r\n",
     NULL, WS_EHANDSHAKE, 302, NULL},
    {"426",
     "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n\r\n", NULL,
     WS_EHANDSHAKE, 426, NULL},
    {"wrong accept",
     RS_LINE RS_UPG RS_CONN
     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOp=\r\n\r\n",
     NULL, WS_EHANDSHAKE, 101, NULL},
    {"accept of another key",
     RS_LINE RS_UPG RS_CONN
     "Sec-WebSocket-Accept: HSmrc0sMlYUkAGmm5OPpG2HaGWk=\r\n\r\n",
     NULL, WS_EHANDSHAKE, 101, NULL},
    {"accept in the wrong case",
     RS_LINE RS_UPG RS_CONN
     "Sec-WebSocket-Accept: S3PPLMBITXAQ9KYGZZHZRBK+XOO=\r\n\r\n",
     NULL, WS_EHANDSHAKE, 101, NULL},
    {"accept with trailing junk",
     RS_LINE RS_UPG RS_CONN "Sec-WebSocket-Accept: " RFC_ACCEPT "x\r\n\r\n",
     NULL, WS_EHANDSHAKE, 101, NULL},
    {"accept cut short",
     RS_LINE RS_UPG RS_CONN
     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo\r\n\r\n",
     NULL, WS_EHANDSHAKE, 101, NULL},
    {"the key instead of the accept",
     RS_LINE RS_UPG RS_CONN "Sec-WebSocket-Accept: " RFC_KEY "\r\n\r\n", NULL,
     WS_EHANDSHAKE, 101, NULL},
    {"missing accept", RS_LINE RS_UPG RS_CONN "\r\n", NULL, WS_EHANDSHAKE, 101,
     NULL},
    {"two accept headers", RS_LINE RS_UPG RS_CONN RS_ACC RS_ACC "\r\n", NULL,
     WS_EHANDSHAKE, 101, NULL},
    {"missing Upgrade", RS_LINE RS_CONN RS_ACC "\r\n", NULL, WS_EHANDSHAKE,
     101, NULL},
    {"Upgrade: h2c", RS_LINE "Upgrade: h2c\r\n" RS_CONN RS_ACC "\r\n", NULL,
     WS_EHANDSHAKE, 101, NULL},
    {"missing Connection", RS_LINE RS_UPG RS_ACC "\r\n", NULL, WS_EHANDSHAKE,
     101, NULL},
    {"Connection: close", RS_LINE RS_UPG "Connection: close\r\n" RS_ACC "\r\n",
     NULL, WS_EHANDSHAKE, 101, NULL},
    {"an extension chosen",
     RS_LINE RS_UPG RS_CONN RS_ACC
     "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
     NULL, WS_EHANDSHAKE, 101, NULL},
    {"an extension chosen, lower case",
     RS_LINE RS_UPG RS_CONN RS_ACC "sec-websocket-extensions: x-foo\r\n\r\n",
     "chat", WS_EHANDSHAKE, 101, NULL},
    {"protocol not offered",
     RS_LINE RS_UPG RS_CONN RS_ACC "Sec-WebSocket-Protocol: superchat\r\n\r\n",
     "chat", WS_EHANDSHAKE, 101, NULL},
    {"protocol, a prefix of the offered one",
     RS_LINE RS_UPG RS_CONN RS_ACC "Sec-WebSocket-Protocol: cha\r\n\r\n",
     "chat", WS_EHANDSHAKE, 101, NULL},
    {"protocol, longer than the offered one",
     RS_LINE RS_UPG RS_CONN RS_ACC "Sec-WebSocket-Protocol: chats\r\n\r\n",
     "chat", WS_EHANDSHAKE, 101, NULL},
    {"protocol when none was offered",
     RS_LINE RS_UPG RS_CONN RS_ACC "Sec-WebSocket-Protocol: chat\r\n\r\n", NULL,
     WS_EHANDSHAKE, 101, NULL},
    {"two protocol headers",
     RS_LINE RS_UPG RS_CONN RS_ACC "Sec-WebSocket-Protocol: chat\r\n"
     "Sec-WebSocket-Protocol: chat\r\n\r\n",
     "chat, superchat", WS_EHANDSHAKE, 101, NULL},
    {"a protocol list chosen",
     RS_LINE RS_UPG RS_CONN RS_ACC
     "Sec-WebSocket-Protocol: chat, superchat\r\n\r\n",
     "chat, superchat", WS_EHANDSHAKE, 101, NULL},
    {"malformed header line", RS_LINE "Upgrade websocket\r\n" RS_CONN RS_ACC
     "\r\n", NULL, WS_EHANDSHAKE, 101, NULL},
    {"obs-fold", RS_LINE RS_UPG RS_CONN RS_ACC " folded\r\n\r\n", NULL,
     WS_EHANDSHAKE, 101, NULL},
    {"four-digit status", "HTTP/1.1 1010 x\r\n" RS_UPG RS_CONN RS_ACC "\r\n",
     NULL, WS_EHANDSHAKE, 0, NULL},
    {"two-digit status", "HTTP/1.1 10\r\n" RS_UPG RS_CONN RS_ACC "\r\n", NULL,
     WS_EHANDSHAKE, 0, NULL},
    {"status 601", "HTTP/1.1 601 x\r\n" RS_UPG RS_CONN RS_ACC "\r\n", NULL,
     WS_EHANDSHAKE, 0, NULL},
    {"bare CR in the status line hides a byte",
     "HTTP/1.1 101 OK\rX" RS_UPG RS_CONN RS_ACC "\r\n", NULL, WS_EHANDSHAKE, 0,
     NULL},
    {"bare LF in the status line hides a header",
     "HTTP/1.1 101 OK\nX-Swallowed: y\r\n" RS_UPG RS_CONN RS_ACC "\r\n", NULL,
     WS_EHANDSHAKE, 0, NULL},
};

static void test_response_parse(void) {
  guard g;
  size_t i;
  guard_init(&g);
  for (i = 0; i < sizeof resp_cases / sizeof resp_cases[0]; i++) {
    const resp_case *c = &resp_cases[i];
    size_t len = strlen(c->text), olen = c->offered ? strlen(c->offered) : 0;
    size_t consumed = 0, k, bad = 0;
    ws_header hdrs[16];
    ws_response resp;
    int rc;
    memset(&resp, 0xAA, sizeof resp);
    rc = ws_response_parse(guard_put(&g, c->text, len), len, rfc_nonce,
                           c->offered, olen, &resp, hdrs, 16, &consumed);
    if (!t_check(rc == c->rc && resp.status == c->status, __FILE__, __LINE__,
                 "response verdict and status"))
      printf("    %s: got %s, status %d\n", c->name, ws_errname(rc),
             resp.status);
    if (rc == WS_OK && c->rc == WS_OK) {
      CHECK_INT(consumed, len);
      CHECK(resp.headers == hdrs);
      CHECK_INT(resp.num_headers, count_headers(c->text));
      if (c->protocol)
        CHECK_SPAN(resp.protocol, resp.protocol_len, c->protocol);
      else
        CHECK(resp.protocol == NULL && resp.protocol_len == 0);
    }
    /* Prefixes: a valid response needs more bytes at every cut; no prefix
     * of any response is accepted. */
    for (k = 0; k < len; k++) {
      rc = ws_response_parse(guard_put(&g, c->text, k), k, rfc_nonce,
                             c->offered, olen, &resp, hdrs, 16, &consumed);
      if (c->rc == WS_OK ? rc != WS_EAGAIN : rc == WS_OK) bad++;
    }
    if (!t_check(bad == 0, __FILE__, __LINE__, "response prefixes"))
      printf("    %s\n", c->name);
  }
  /* Bytes after the head (a first frame) are not consumed. */
  {
    static const char text[] = RS_LINE RS_UPG RS_CONN RS_ACC "\r\n"
                               "\x81\x05" "Hello\r\n\r\n";
    size_t consumed = 0, head = sizeof text - 1 - 11;
    ws_header hdrs[8];
    ws_response resp;
    CHECK_INT(ws_response_parse(guard_put(&g, text, sizeof text - 1),
                                sizeof text - 1, rfc_nonce, NULL, 0, &resp,
                                hdrs, 8, &consumed),
              WS_OK);
    CHECK_INT(consumed, head);
    /* Too many headers for the caller's array. */
    CHECK_INT(ws_response_parse(text, sizeof text - 1, rfc_nonce, NULL, 0,
                                &resp, hdrs, 2, &consumed),
              WS_EHANDSHAKE);
    CHECK_INT(ws_response_parse(text, sizeof text - 1, rfc_nonce, NULL, 0,
                                &resp, hdrs, 3, &consumed),
              WS_OK);
    /* Another nonce: the accept no longer matches. */
    {
      uint8_t other[16];
      memcpy(other, rfc_nonce, 16);
      other[15] ^= 1;
      CHECK_INT(ws_response_parse(text, sizeof text - 1, other, NULL, 0,
                                  &resp, hdrs, 8, &consumed),
                WS_EHANDSHAKE);
    }
    /* Arguments. */
    CHECK_INT(ws_response_parse(text, sizeof text - 1, NULL, NULL, 0, &resp,
                                hdrs, 8, &consumed),
              WS_EINVAL);
    CHECK_INT(ws_response_parse(text, sizeof text - 1, rfc_nonce, NULL, 0,
                                NULL, hdrs, 8, &consumed),
              WS_EINVAL);
    CHECK_INT(ws_response_parse(text, sizeof text - 1, rfc_nonce, NULL, 0,
                                &resp, hdrs, 8, NULL),
              WS_EINVAL);
    CHECK_INT(ws_response_parse(text, sizeof text - 1, rfc_nonce, NULL, 3,
                                &resp, hdrs, 8, &consumed),
              WS_EINVAL);
  }
  guard_free(&g);
}

static void test_response_garbage(void) {
  static const garbage cases[] = {
      {"TLS alert", BYTES("\x15\x03\x03\x00\x02\x02\x28"), 1},
      {"HTML", BYTES("<html><body>"), 1},
      {"lower-case http", BYTES("http/1.1 101 Switching Protocols\r\n"), 1},
      {"HTTP/2", BYTES("HTTP/2 101\r\n\r\n"), 6},
      {"HTTP/1.0", BYTES("HTTP/1.0 101 Switching Protocols\r\n"), 8},
      {"no space after the version", BYTES("HTTP/1.1\t101\r\n\r\n"), 9},
      {"a request", BYTES("GET / HTTP/1.1\r\n\r\n"), 1},
  };
  guard g;
  size_t i, k;
  guard_init(&g);
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const garbage *c = &cases[i];
    size_t bad = 0;
    for (k = 0; k <= c->len; k++) {
      ws_header hdrs[8];
      ws_response resp;
      size_t consumed = 0;
      int rc = ws_response_parse(guard_put(&g, c->text, k), k, rfc_nonce,
                                 NULL, 0, &resp, hdrs, 8, &consumed);
      if (rc != (k < c->at ? WS_EAGAIN : WS_EHANDSHAKE)) bad++;
    }
    if (!t_check(bad == 0, __FILE__, __LINE__, "response garbage fails fast"))
      printf("    %s\n", c->name);
  }
  guard_free(&g);
}

/* ------------------------------------------------------------------------
 * 9. Error names
 * ---------------------------------------------------------------------- */

static void test_errors(void) {
  static const struct {
    int code;
    const char *name, *text;
  } errs[] = {
#define T_ERR(name, val, text) {WS_##name, #name, text},
      WS_ERRNO_MAP(T_ERR)
#undef T_ERR
  };
  static const int unknown[] = {1, 2, 100, -100, WS__ERR_LAST, 1 << 30,
                                -(1 << 30)};
  size_t n = sizeof errs / sizeof errs[0], i, j;
  for (i = 0; i < n; i++) {
    const char *s = ws_strerror(errs[i].code), *e = ws_errname(errs[i].code);
    CHECK(s != NULL && s[0] != '\0');
    CHECK(e != NULL && e[0] != '\0');
    /* WS_SMALL: the name stands for the sentence. */
    if (s) CHECK_STR(s, WS_SMALL ? errs[i].name : errs[i].text);
    if (e) CHECK_STR(e, errs[i].name);
    for (j = 0; j < i; j++) {
      CHECK(strcmp(ws_strerror(errs[j].code), s) != 0);
      CHECK(strcmp(ws_errname(errs[j].code), e) != 0);
    }
  }
  CHECK_STR(ws_errname(WS_EPROTO), "EPROTO");
  CHECK_STR(ws_errname(WS_OK), "OK");
  for (i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    const char *s = ws_strerror(unknown[i]), *e = ws_errname(unknown[i]);
    CHECK(s != NULL && s[0] != '\0');
    CHECK(e != NULL && e[0] != '\0');
    for (j = 0; j < n && s && e; j++) {
      CHECK(strcmp(s, WS_SMALL ? errs[j].name : errs[j].text) != 0);
      CHECK(strcmp(e, errs[j].name) != 0);
    }
  }
}

int main(void) {
  RUN(test_sha1);
  RUN(test_base64);
  RUN(test_accept_key);
  RUN(test_frame_rfc_examples);
  RUN(test_frame_round_trip);
  RUN(test_frame_errors);
  RUN(test_frame_two_bytes_exhaustive);
  RUN(test_frame_write_errors);
  RUN(test_mask);
  RUN(test_utf8_table);
  RUN(test_utf8_differential);
  RUN(test_utf8_long);
  RUN(test_utf8_pairs);
  RUN(test_close);
  RUN(test_request_valid);
  RUN(test_request_invalid);
  RUN(test_header_name_bytes);
  RUN(test_request_garbage);
  RUN(test_response_write);
  RUN(test_http_error_write);
  RUN(test_client_request_write);
  RUN(test_response_parse);
  RUN(test_response_garbage);
  RUN(test_errors);
  return t_done("test_codec");
}
