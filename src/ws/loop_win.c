/* loop_win.c - part 8, layer 2: the loop's Windows port: Winsock and winpthreads under the POSIX names loop.c uses.
 * Uses ws.h and config.h only; empty on other systems. Its POSIX names are
 * macros over ws__w_* functions, so loop.c reads the same on every system. */
#include "config.h"

#if !defined(WS_NO_LOOP) && WS__HAVE_NET && defined(_WIN32)

/* What cannot work here says so instead of building an empty loop. */
#if !defined(__MINGW32__)
#error "ws: the loop on Windows builds with mingw-w64 (it uses winpthreads and POSIX headers); define WS_NO_LOOP for the core alone"
#endif
#if defined(WS_LOOP_EPOLL) || defined(WS_LOOP_KQUEUE) || defined(WS_LOOP_POLL)
#error "ws: on Windows the loop's backend is WSAPoll (loop_poll.c): do not force epoll, kqueue or poll"
#endif
#if WS_ENABLE_MBEDTLS
#error "ws: TLS in the loop is not ported to Windows: build with WS_ENABLE_MBEDTLS=0, or WS_NO_LOOP for the core with ws_tls_new_io()"
#endif
#define WS_LOOP_WSAPOLL 1

/* WSAPoll, inet_pton and getaddrinfo are Vista's. */
#if !defined(_WIN32_WINNT) || _WIN32_WINNT < 0x0600
#undef _WIN32_WINNT
#define _WIN32_WINNT 0x0600
#endif
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN 1
#endif
#ifndef NOMINMAX
#define NOMINMAX 1
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
/* Everything loop.c includes comes first, before the macros below. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Sockets are kernel handles, which fit an int (Windows keeps them below
 * 2^24 so 32-bit code can hold them): the loop keeps int fds everywhere,
 * -1 for INVALID_SOCKET. */
#define WS__W_S(fd) ((SOCKET)(intptr_t)(fd))

/* Winsock reports through WSAGetLastError(), loop.c reads errno. */
static int ws__w_fail(void) {
  int e;
  switch (WSAGetLastError()) {
  case WSAEWOULDBLOCK: e = EWOULDBLOCK; break;
  case WSAEINTR: e = EINTR; break;
  case WSAEINPROGRESS: e = EINPROGRESS; break;
  case WSAECONNABORTED: e = ECONNABORTED; break;
  case WSAECONNRESET: e = ECONNRESET; break;
  case WSAEMFILE: e = EMFILE; break;
  case WSAENOBUFS: e = ENOBUFS; break;
  case WSAEADDRINUSE: e = EADDRINUSE; break;
  case WSAEINVAL: e = EINVAL; break;
  default: e = EIO; break;
  }
  errno = e;
  return -1;
}

/* Winsock wants WSAStartup() before the first socket. It counts calls,
 * and a loop never ends the process's use of it, so once is enough: a
 * race between two first loops calls it twice, which is harmless. */
static int ws__w_started;
static int ws__w_startup(void) {
  WSADATA d;
  if (ws__w_started) return 0;
  if (WSAStartup(MAKEWORD(2, 2), &d) != 0) {
    errno = EIO;
    return -1;
  }
  ws__w_started = 1;
  return 0;
}

static int ws__w_fd(SOCKET s) {
  if (s == INVALID_SOCKET) return ws__w_fail();
  /* Not inherited by child processes (loop.c's FD_CLOEXEC elsewhere). */
  (void)SetHandleInformation((HANDLE)s, HANDLE_FLAG_INHERIT, 0);
  return (int)s;
}

static int ws__w_socket(int af, int type, int proto) {
  if (ws__w_startup() < 0) return -1;
  return ws__w_fd(socket(af, type, proto));
}

static int ws__w_accept(int fd) {
  return ws__w_fd(accept(WS__W_S(fd), NULL, NULL));
}

static int ws__w_close(int fd) {
  return closesocket(WS__W_S(fd)) == 0 ? 0 : ws__w_fail();
}

/* A non-blocking connect says WSAEWOULDBLOCK where POSIX says EINPROGRESS. */
static int ws__w_connect(int fd, const struct sockaddr *sa, int len) {
  if (connect(WS__W_S(fd), sa, len) == 0) return 0;
  if (WSAGetLastError() == WSAEWOULDBLOCK) {
    errno = EINPROGRESS;
    return -1;
  }
  return ws__w_fail();
}

static int ws__w_ret(int r) { return r == SOCKET_ERROR ? ws__w_fail() : r; }

static int ws__w_recv(int fd, void *b, size_t n, int flags) {
  return ws__w_ret(recv(WS__W_S(fd), (char *)b, n > INT_MAX ? INT_MAX : (int)n, flags));
}

static int ws__w_send(int fd, const void *b, size_t n, int flags) {
  return ws__w_ret(send(WS__W_S(fd), (const char *)b, n > INT_MAX ? INT_MAX : (int)n, flags));
}

/* sendmsg() for loop.c's gathered writes: WSASend takes the pieces. */
struct ws__w_iovec { void *iov_base; size_t iov_len; };
struct ws__w_msghdr { struct ws__w_iovec *msg_iov; int msg_iovlen; };
static int ws__w_sendmsg(int fd, const struct ws__w_msghdr *m, int flags) {
  WSABUF b[8];
  DWORD n = 0;
  int i, cnt = m->msg_iovlen < 8 ? m->msg_iovlen : 8;
  for (i = 0; i < cnt; i++) {
    b[i].buf = (char *)m->msg_iov[i].iov_base;
    b[i].len = m->msg_iov[i].iov_len > 0x7FFFFFFF ? 0x7FFFFFFF : (ULONG)m->msg_iov[i].iov_len;
  }
  if (WSASend(WS__W_S(fd), b, (DWORD)cnt, &n, (DWORD)flags, NULL, NULL) != 0)
    return ws__w_fail();
  return (int)n;
}

static int ws__w_nonblock(int fd) {
  u_long on = 1;
  return ioctlsocket(WS__W_S(fd), FIONBIO, &on) == 0 ? 0 : ws__w_fail();
}

/* The wake-up pipe: a connected pair of loopback TCP sockets (Windows has
 * no pipe WSAPoll can watch). The accepted end must be the one connected
 * here, not another local process racing for the port. */
static int ws__w_pipe(int fds[2]) {
  struct sockaddr_in a, b, c;
  int alen = sizeof a, blen = sizeof b, clen = sizeof c;
  SOCKET ls, w = INVALID_SOCKET, r = INVALID_SOCKET;
  if (ws__w_startup() < 0) return -1;
  ls = socket(AF_INET, SOCK_STREAM, 0);
  if (ls == INVALID_SOCKET) return ws__w_fail();
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(ls, (struct sockaddr *)&a, &alen) != 0 || listen(ls, 1) != 0)
    goto fail;
  w = socket(AF_INET, SOCK_STREAM, 0);
  if (w == INVALID_SOCKET || connect(w, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(w, (struct sockaddr *)&b, &blen) != 0)
    goto fail;
  r = accept(ls, (struct sockaddr *)&c, &clen);
  if (r == INVALID_SOCKET || c.sin_port != b.sin_port ||
      c.sin_addr.s_addr != b.sin_addr.s_addr)
    goto fail;
  closesocket(ls);
  fds[0] = ws__w_fd(r);
  fds[1] = ws__w_fd(w);
  return 0;
fail:
  (void)ws__w_fail();
  closesocket(ls);
  if (w != INVALID_SOCKET) closesocket(w);
  if (r != INVALID_SOCKET) closesocket(r);
  return -1;
}

/* loop.c's calls, with Winsock's types (SOCKET, char * options, int
 * lengths) and errno. */
#define socket(af, type, proto) ws__w_socket(af, type, proto)
#define accept(fd, sa, len) ws__w_accept(fd)
#define close(fd) ws__w_close(fd)
#define connect(fd, sa, len) ws__w_connect(fd, sa, (int)(len))
#define recv(fd, b, n, f) ws__w_recv(fd, b, n, f)
#define send(fd, b, n, f) ws__w_send(fd, b, n, f)
#define read(fd, b, n) ws__w_recv(fd, b, n, 0)
#define write(fd, b, n) ws__w_send(fd, b, n, 0)
#define iovec ws__w_iovec
#define msghdr ws__w_msghdr
#define sendmsg(fd, m, f) ws__w_sendmsg(fd, m, f)
#define pipe(fds) ws__w_pipe(fds)
#define bind(fd, sa, len) ws__w_ret(bind(WS__W_S(fd), sa, (int)(len)))
#define listen(fd, n) ws__w_ret(listen(WS__W_S(fd), n))
#define shutdown(fd, how) ws__w_ret(shutdown(WS__W_S(fd), how))
#define getsockname(fd, sa, len) ws__w_ret(getsockname(WS__W_S(fd), sa, len))
#define setsockopt(fd, lv, opt, v, n) \
  ws__w_ret(setsockopt(WS__W_S(fd), lv, opt, (const char *)(v), (int)(n)))
#define getsockopt(fd, lv, opt, v, n) \
  ws__w_ret(getsockopt(WS__W_S(fd), lv, opt, (char *)(v), n))
#define SHUT_WR SD_SEND
/* Windows threads have no signal masks. */
#undef pthread_sigmask
#define pthread_sigmask(how, set, old) ((void)(set), (void)(old))
#define sigset_t _sigset_t
#define sigfillset(set) ((void)(*(set) = 0))

#endif /* _WIN32 */
