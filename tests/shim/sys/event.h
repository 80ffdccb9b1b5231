/* tests/shim/sys/event.h - the kqueue declarations the loop's kqueue backend
 * uses, as the BSDs' kqueue(2) manual gives them, so that `make
 * check-layers` compiles that backend on Linux too. Compile-only: nothing
 * links against it or runs it. */
#ifndef WS_TEST_SHIM_SYS_EVENT_H
#define WS_TEST_SHIM_SYS_EVENT_H
#include <stdint.h>
#include <time.h>

struct kevent {
  uintptr_t ident;
  short filter;
  unsigned short flags;
  unsigned int fflags;
  intptr_t data;
  void *udata;
};

#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)
#define EV_ADD 0x0001
#define EV_DELETE 0x0002
#define EV_ERROR 0x4000
#define EV_EOF 0x8000

#define EV_SET(kevp, a, b, c, d, e, f) \
  do {                                 \
    struct kevent *ev__ = (kevp);      \
    ev__->ident = (uintptr_t)(a);      \
    ev__->filter = (short)(b);         \
    ev__->flags = (unsigned short)(c); \
    ev__->fflags = (unsigned int)(d);  \
    ev__->data = (intptr_t)(e);        \
    ev__->udata = (f);                 \
  } while (0)

int kqueue(void);
int kevent(int kq, const struct kevent *changelist, int nchanges,
           struct kevent *eventlist, int nevents, const struct timespec *timeout);
#endif
