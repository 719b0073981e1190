/* A host program that breaks the channel protocol on purpose, for the launcher's framing tests
 * (tests/unit/test_launcher.c). The launcher starts it exactly as it starts idevs-compartment: channel on fd 3,
 * the "logic" on fd 4. Here the logic is a text file naming what to do:
 *   garbage      after Init, bytes that are no frame
 *   oversized    after Init, a header announcing a frame over the channel's limit
 *   undecodable  after Init, a frame of the right length that is no protobuf Frame
 *   truncated    after Init, half a frame, then exit
 *   wrong        after Init, a frame only the launcher may send (Deliver)
 *   silent       reads Init and never answers
 *   midstream    a correct handshake (real keys), Ready, then garbage on the first Deliver
 *   refusal      the same handshake, then a Done for the first Deliver with a refusal code no descriptor declares
 * It then waits to be killed. */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bridge.pb-c.h"
#include "idevs_channel.h"
#include "idevs_crypto.h"
#include "idevs_identity.h"

#define FD_CHANNEL 3
#define FD_MODE 4

static void write_raw(const void *p, size_t len)
{
    const uint8_t *b = p;
    while (len > 0) {
        ssize_t n = write(FD_CHANNEL, b, len);
        if (n <= 0)
            return;
        b += n;
        len -= (size_t)n;
    }
}

static void wait_forever(void)
{
    for (;;)
        pause();
}

static Idevs__Bridge__V1__Frame *expect(idevs_channel *ch, Idevs__Bridge__V1__Frame__BodyCase want)
{
    Idevs__Bridge__V1__Frame *f = NULL;
    if (idevs_channel_recv(ch, &f, 10000) != IDEVS_OK || f->body_case != want)
        _exit(3);
    return f;
}

static void garbage(void)
{
    static const char junk[] = "\xff\xff\xff\xf0 this is not a frame";
    write_raw(junk, sizeof junk - 1);
}

/* A correct handshake with real keys, then garbage when the first delivery arrives. */
static void midstream(idevs_channel *ch, Idevs__Bridge__V1__Frame *init, bool refusal)
{
    idevs__bridge__v1__frame__free_unpacked(init, NULL);
    uint8_t sign[32], kex[32], blob[48];
    EVP_PKEY *k1 = NULL, *k2 = NULL;
    if (idevs_ed25519_generate(&k1, sign) != IDEVS_OK || idevs_x25519_generate(&k2, kex) != IDEVS_OK ||
        idevs_random(blob, sizeof blob) != IDEVS_OK)
        _exit(4);
    Idevs__Bridge__V1__CertifyRequest req = IDEVS__BRIDGE__V1__CERTIFY_REQUEST__INIT;
    req.sign_public.data = sign;
    req.sign_public.len = sizeof sign;
    req.kex_public.data = kex;
    req.kex_public.len = sizeof kex;
    req.sealed_keys.data = blob;
    req.sealed_keys.len = sizeof blob;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_CERTIFY_REQUEST;
    f.certify_request = &req;
    if (idevs_channel_send(ch, &f, 10000) != IDEVS_OK || idevs_channel_flush(ch, 10000) != IDEVS_OK)
        _exit(5);
    idevs__bridge__v1__frame__free_unpacked(expect(ch, IDEVS__BRIDGE__V1__FRAME__BODY_CERTIFIED), NULL);
    Idevs__Bridge__V1__Ready ready = IDEVS__BRIDGE__V1__READY__INIT;
    ready.abi = 1;
    ready.logic_name = "launcher-peer";
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_READY;
    f.ready = &ready;
    if (idevs_channel_send(ch, &f, 10000) != IDEVS_OK || idevs_channel_flush(ch, 10000) != IDEVS_OK)
        _exit(6);
    Idevs__Bridge__V1__Frame *dv = expect(ch, IDEVS__BRIDGE__V1__FRAME__BODY_DELIVER);
    if (refusal) {
        Idevs__Bridge__V1__Done done = IDEVS__BRIDGE__V1__DONE__INIT;
        done.delivery_id = dv->deliver->delivery_id;
        done.status = IDEVS_ERR_LOGIC;
        done.refusal = 99;
        f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_DONE;
        f.done = &done;
        if (idevs_channel_send(ch, &f, 10000) != IDEVS_OK || idevs_channel_flush(ch, 10000) != IDEVS_OK)
            _exit(7);
    } else {
        garbage();
    }
    idevs__bridge__v1__frame__free_unpacked(dv, NULL);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
}

int main(void)
{
    char mode[32] = "";
    ssize_t n = read(FD_MODE, mode, sizeof mode - 1);
    if (n <= 0)
        return 2;
    mode[n] = '\0';
    mode[strcspn(mode, "\n")] = '\0';
    idevs_channel ch;
    idevs_channel_init(&ch, FD_CHANNEL, 0);
    Idevs__Bridge__V1__Frame *init = expect(&ch, IDEVS__BRIDGE__V1__FRAME__BODY_INIT);
    if (strcmp(mode, "garbage") == 0) {
        garbage();
    } else if (strcmp(mode, "oversized") == 0) {
        static const uint8_t header[] = {0x7f, 0xff, 0xff, 0xff, 0x0a, 0x00};
        write_raw(header, sizeof header);
    } else if (strcmp(mode, "undecodable") == 0) {
        static const uint8_t frame[] = {0x00, 0x00, 0x00, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        write_raw(frame, sizeof frame);
    } else if (strcmp(mode, "truncated") == 0) {
        static const uint8_t half[] = {0x00, 0x00, 0x00, 0x40, 0x6a, 0x02, 0x08, 0x01};
        write_raw(half, sizeof half);
        _exit(0);
    } else if (strcmp(mode, "wrong") == 0) {
        Idevs__Bridge__V1__Deliver d = IDEVS__BRIDGE__V1__DELIVER__INIT;
        d.delivery_id = 1;
        d.topic = "t/in/events";
        Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
        f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_DELIVER;
        f.deliver = &d;
        idevs_channel_send(&ch, &f, 10000);
        idevs_channel_flush(&ch, 10000);
    } else if (strcmp(mode, "midstream") == 0 || strcmp(mode, "refusal") == 0) {
        midstream(&ch, init, strcmp(mode, "refusal") == 0);
        init = NULL;
    } else if (strcmp(mode, "silent") != 0) {
        return 2;
    }
    if (init != NULL)
        idevs__bridge__v1__frame__free_unpacked(init, NULL);
    wait_forever();
}
