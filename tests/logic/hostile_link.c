/* Hostile integration logics against the compartment's split: each tries to get plaintext (or the key
 * holder's memory) past the key holder, the only part that may seal. Built once per HL_* definition
 * (tests/logic/meson.build); tests/unit/test_compartment.c checks that each is stopped and that no frame the
 * compartment sends holds the plaintext of the event.
 *   HL_RAW_PUBLISH    writes its own bridge Publish frame, with the plaintext as "envelope", on descriptor 3
 *   HL_RAW_FDS        writes that frame on every other descriptor, 0 first
 *   HL_VMREAD         process_vm_readv() of the key holder (its parent)
 *   HL_PROCMEM        opens /proc/<key holder>/mem
 *   HL_PTRACE_ATTACH  ptrace(PTRACE_ATTACH) of the key holder
 *   HL_UNDECLARED_RAW writes a LogicEmit frame for an output index the descriptor does not declare
 *   HL_LATE_EMIT      the first event returns; in the second it writes a LogicEmit frame of the first event
 *   HL_FLOOD          emits 300 times through the API (the bound is 256 per event)
 *   HL_FLOOD_RAW      writes 300 LogicEmit frames of the current event itself
 *   HL_HUGE           emits 100 MB through the API
 *   HL_HUGE_RAW       writes a frame header announcing 100 MB on its link
 *   HL_SPIN           never returns from its handler
 *   HL_REQUEST_RAW    writes a LogicRequest frame for request 0, for which it registered no response handler
 *   HL_REFUSAL_RAW    writes a LogicDone frame refusing its event with refusal code 200, which no descriptor
 *                     declares (at most 16): a code outside the closed list would be a channel of its own */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <unistd.h>

#include "compartment/raw_frame.h"
#include "idevs_logic.h"

/* ---- hand-made frames: a 4-byte big-endian length, then the protobuf bytes (enclave-bridge/bridge.proto) ---- */

__attribute__((unused)) static size_t put_bytes(uint8_t *p, uint8_t tag, const void *data, size_t len)
{
    size_t n = 0;
    p[n++] = tag;
    n += raw_frame_varint(p + n, len);
    memcpy(p + n, data, len);
    return n + len;
}

/* Frame{ body (field, length-delimited) = inner }, framed. */
__attribute__((unused)) static size_t frame(uint8_t *out, unsigned field, const uint8_t *inner, size_t inner_len)
{
    size_t n = 4;
    n += raw_frame_varint(out + n, (uint64_t)field << 3 | 2);
    n += raw_frame_varint(out + n, inner_len);
    memcpy(out + n, inner, inner_len);
    n += inner_len;
    uint32_t body = (uint32_t)(n - 4);
    out[0] = (uint8_t)(body >> 24);
    out[1] = (uint8_t)(body >> 16);
    out[2] = (uint8_t)(body >> 8);
    out[3] = (uint8_t)body;
    return n;
}

/* Publish{ delivery_id 1, topic, envelope = the plaintext, qos 1 } */
__attribute__((unused)) static size_t raw_publish(uint8_t *out, const idevs_message *m)
{
    uint8_t inner[512];
    size_t n = 0;
    inner[n++] = 0x09; /* delivery_id, fixed64 */
    uint64_t id = 1;
    memcpy(inner + n, &id, 8);
    n += 8;
    n += put_bytes(inner + n, 0x12, "idevs/test/out/events", 21);
    size_t len = m->payload_len < 256 ? m->payload_len : 256;
    n += put_bytes(inner + n, 0x1a, m->payload, len);
    inner[n++] = 0x20;
    inner[n++] = 1;
    return frame(out, 12, inner, n);
}

/* LogicEmit (Frame field 31) or LogicRequest (32): { output or request index, payload, seq } alike */
__attribute__((unused)) static size_t raw_tx(uint8_t *out, unsigned field, uint32_t index, const void *payload,
                                             size_t len, uint64_t seq)
{
    uint8_t inner[512];
    size_t n = 0;
    inner[n++] = 0x08;
    n += raw_frame_varint(inner + n, index);
    n += put_bytes(inner + n, 0x12, payload, len < 256 ? len : 256);
    inner[n++] = 0x19; /* seq, fixed64 */
    memcpy(inner + n, &seq, 8);
    n += 8;
    return frame(out, field, inner, n);
}

__attribute__((unused)) static size_t raw_emit(uint8_t *out, uint32_t output, const void *payload, size_t len, uint64_t seq)
{
    return raw_tx(out, 31, output, payload, len, seq);
}

/* LogicDone (Frame field 33) { status, seq, refusal } */
__attribute__((unused)) static size_t raw_done(uint8_t *out, uint32_t status, uint64_t seq, uint32_t refusal)
{
    uint8_t inner[32];
    size_t n = 0;
    inner[n++] = 0x08;
    n += raw_frame_varint(inner + n, status);
    inner[n++] = 0x11; /* seq, fixed64 */
    memcpy(inner + n, &seq, 8);
    n += 8;
    inner[n++] = 0x18;
    n += raw_frame_varint(inner + n, refusal);
    return frame(out, 33, inner, n);
}

__attribute__((unused)) static void put(int fd, const uint8_t *p, size_t n)
{
    ssize_t w = write(fd, p, n);
    (void)w;
}

static unsigned events;

/* The key holder forked this process right before its own start-up: its pid is almost surely ours minus one.
 * (getppid is not in the logic's allowlist either; the call below is what is forbidden, whatever the target.) */
__attribute__((unused)) static pid_t key_holder(void)
{
    return getpid() - 1;
}

static idevs_err on_event(idevs_logic *lg, const idevs_message *m, void *state)
{
    (void)state;
    (void)lg;
    (void)m;
    uint8_t buf[1024];
    (void)buf;
    events++;
#if defined(HL_RAW_PUBLISH)
    put(3, buf, raw_publish(buf, m));
#elif defined(HL_RAW_FDS)
    size_t n = raw_publish(buf, m);
    for (int fd = 0; fd < 64; fd++)
        if (fd != 3)
            put(fd, buf, n);
#elif defined(HL_VMREAD)
    char stolen[64];
    struct iovec local = {stolen, sizeof stolen}, remote = {(void *)m->payload, sizeof stolen};
    ssize_t r = process_vm_readv(key_holder(), &local, 1, &remote, 1, 0);
    (void)r;
#elif defined(HL_PROCMEM)
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", (int)key_holder());
    int fd = open(path, O_RDONLY);
    if (fd >= 0)
        close(fd);
#elif defined(HL_PTRACE_ATTACH)
    ptrace(PTRACE_ATTACH, key_holder(), NULL, NULL);
#elif defined(HL_UNDECLARED_RAW)
    put(3, buf, raw_emit(buf, 63, m->payload, m->payload_len, events));
#elif defined(HL_LATE_EMIT)
    if (events == 2)
        put(3, buf, raw_emit(buf, 0, m->payload, m->payload_len, 1));
    return IDEVS_OK;
#elif defined(HL_FLOOD)
    for (int i = 0; i < 300; i++)
        (void)idevs_emit(lg, "out", m->payload, m->payload_len);
    return IDEVS_OK; /* whatever emit said */
#elif defined(HL_FLOOD_RAW)
    for (int i = 0; i < 300; i++)
        put(3, buf, raw_emit(buf, 0, m->payload, m->payload_len, events));
    return IDEVS_OK;
#elif defined(HL_HUGE)
    size_t huge = 100u * 1024u * 1024u;
    char *p = calloc(1, huge);
    idevs_err err = p != NULL ? idevs_emit(lg, "out", p, huge) : IDEVS_ERR_NOMEM;
    free(p);
    return err;
#elif defined(HL_HUGE_RAW)
    uint32_t len = 100u * 1024u * 1024u;
    uint8_t head[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
    put(3, head, 4);
    put(3, m->payload, m->payload_len);
    return IDEVS_OK;
#elif defined(HL_REQUEST_RAW)
    put(3, buf, raw_tx(buf, 32, 0, m->payload, m->payload_len, events));
#elif defined(HL_REFUSAL_RAW)
    put(3, buf, raw_done(buf, IDEVS_ERR_LOGIC, events, 200));
    return IDEVS_ERR_LOGIC;
#elif defined(HL_SPIN)
    for (volatile unsigned long i = 0;; i++) {
    }
#else
#error "define one HL_* behaviour"
#endif
    return IDEVS_OK;
}

static idevs_err setup(idevs_logic *lg, const char *config_json, void **state)
{
    (void)config_json;
    (void)state;
    return idevs_on_input(lg, "events", on_event);
}

const idevs_logic_module idevs_logic_entry = {IDEVS_LOGIC_ABI, "hostile-link", setup, NULL};
