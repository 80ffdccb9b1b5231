/*
 * nats_official.c - a tiny peer over the official NATS C client (libnats),
 * run by tests/test_nats.c as a real second implementation of the
 * protocol. Built only where libnats is installed (see the Makefile).
 *   nats_official pub URL SUBJECT PAYLOAD
 *       publishes PAYLOAD (raw bytes) once, flushes, exits 0
 *   nats_official sub URL SUBJECT TIMEOUT_MS
 *       subscribes, prints "ready" once the server has the subscription,
 *       then prints the first message's payload in hex on one line
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  natsConnection *nc = NULL;
  natsSubscription *sub = NULL;
  natsMsg *msg = NULL;
  natsStatus s;
  int rc = 1;
  if (argc != 5) {
    fprintf(stderr, "usage: %s pub URL SUBJECT PAYLOAD | sub URL SUBJECT MS\n",
            argv[0]);
    return 2;
  }
  s = natsConnection_ConnectTo(&nc, argv[2]);
  if (s == NATS_OK && strcmp(argv[1], "pub") == 0) {
    s = natsConnection_Publish(nc, argv[3], argv[4], (int)strlen(argv[4]));
    if (s == NATS_OK) s = natsConnection_Flush(nc);
    rc = s == NATS_OK ? 0 : 1;
  } else if (s == NATS_OK && strcmp(argv[1], "sub") == 0) {
    s = natsConnection_SubscribeSync(&sub, nc, argv[3]);
    if (s == NATS_OK) s = natsConnection_Flush(nc);
    if (s == NATS_OK) {
      printf("ready\n");
      fflush(stdout);
      s = natsSubscription_NextMsg(&msg, sub, atoi(argv[4]));
    }
    if (s == NATS_OK) {
      const unsigned char *d = (const unsigned char *)natsMsg_GetData(msg);
      int i, n = natsMsg_GetDataLength(msg);
      for (i = 0; i < n; i++) printf("%02x", d[i]);
      printf("\n");
      fflush(stdout);
      rc = 0;
    }
    natsMsg_Destroy(msg);
    natsSubscription_Destroy(sub);
  }
  if (s != NATS_OK) fprintf(stderr, "nats_official: %s\n", natsStatus_GetText(s));
  natsConnection_Destroy(nc);
  nats_Close();
  return rc;
}
