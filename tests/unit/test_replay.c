/* The replay window (base/idevs_replay.h), exhaustively in the manner of WireGuard's counter tests, and
 * against a trivially correct model on random walks. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "idevs_replay.h"

#define W ((uint64_t)IDEVS_REPLAY_WINDOW)

/* Check then accept, as a receiver does; returns the check's result and asserts both agree. */
static idevs_err take(idevs_replay *w, uint64_t seq)
{
    idevs_err c = idevs_replay_check(w, seq);
    idevs_err a = idevs_replay_accept(w, seq);
    CU_ASSERT_EQUAL(c, a);
    return a;
}

static void test_zero_never_valid(void)
{
    idevs_replay w;
    idevs_replay_init(&w);
    CU_ASSERT_EQUAL(idevs_replay_check(&w, 0), IDEVS_ERR_OUTSIDE_WINDOW);
    CU_ASSERT_EQUAL(idevs_replay_accept(&w, 0), IDEVS_ERR_OUTSIDE_WINDOW);
    CU_ASSERT_EQUAL(take(&w, 5), IDEVS_OK);
    CU_ASSERT_EQUAL(take(&w, 0), IDEVS_ERR_OUTSIDE_WINDOW);
    CU_ASSERT_EQUAL(w.top, 5);
}

static void test_in_order_and_duplicates(void)
{
    idevs_replay w;
    idevs_replay_init(&w);
    for (uint64_t s = 1; s <= 5000; s++) {
        CU_ASSERT_EQUAL(take(&w, s), IDEVS_OK);
        CU_ASSERT_EQUAL(take(&w, s), IDEVS_ERR_REPLAY);
        if (s > 1)
            CU_ASSERT_EQUAL(take(&w, s - 1), IDEVS_ERR_REPLAY);
    }
    CU_ASSERT_EQUAL(w.top, 5000);
}

static void test_check_changes_nothing(void)
{
    idevs_replay w, copy;
    idevs_replay_init(&w);
    CU_ASSERT_EQUAL(take(&w, 10), IDEVS_OK);
    memcpy(&copy, &w, sizeof w);
    CU_ASSERT_EQUAL(idevs_replay_check(&w, 11), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_replay_check(&w, 100000), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_replay_check(&w, 9), IDEVS_OK);
    CU_ASSERT(memcmp(&copy, &w, sizeof w) == 0);
    /* rejected accepts change nothing either */
    CU_ASSERT_EQUAL(idevs_replay_accept(&w, 10), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(idevs_replay_accept(&w, 0), IDEVS_ERR_OUTSIDE_WINDOW);
    CU_ASSERT(memcmp(&copy, &w, sizeof w) == 0);
}

static void test_reordering_within_window(void)
{
    idevs_replay w;
    idevs_replay_init(&w);
    /* even numbers first, then the odd ones in between, all inside the window */
    for (uint64_t s = 2; s <= 2 * 500; s += 2)
        CU_ASSERT_EQUAL(take(&w, s), IDEVS_OK);
    for (uint64_t s = 1; s < 2 * 500; s += 2)
        CU_ASSERT_EQUAL(take(&w, s), IDEVS_OK);
    for (uint64_t s = 1; s <= 2 * 500; s++)
        CU_ASSERT_EQUAL(take(&w, s), IDEVS_ERR_REPLAY);
    /* descending order from a high first number */
    idevs_replay_init(&w);
    for (uint64_t s = W; s >= 1; s--)
        CU_ASSERT_EQUAL(take(&w, s), IDEVS_OK);
    for (uint64_t s = 1; s <= W; s++)
        CU_ASSERT_EQUAL(take(&w, s), IDEVS_ERR_REPLAY);
}

static void test_window_edge(void)
{
    idevs_replay w;
    const uint64_t top = 10 * W + 37;
    idevs_replay_init(&w);
    CU_ASSERT_EQUAL(take(&w, top), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_replay_check(&w, top - (W - 1)), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_replay_check(&w, top - W), IDEVS_ERR_OUTSIDE_WINDOW);
    CU_ASSERT_EQUAL(idevs_replay_check(&w, top - W - 1), IDEVS_ERR_OUTSIDE_WINDOW);
    CU_ASSERT_EQUAL(idevs_replay_check(&w, 1), IDEVS_ERR_OUTSIDE_WINDOW);
    CU_ASSERT_EQUAL(take(&w, top - (W - 1)), IDEVS_OK);
    CU_ASSERT_EQUAL(take(&w, top - (W - 1)), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(take(&w, top - W), IDEVS_ERR_OUTSIDE_WINDOW);
    /* every number of the window can be filled, each exactly once */
    for (uint64_t s = top - (W - 2); s < top; s++)
        CU_ASSERT_EQUAL(take(&w, s), IDEVS_OK);
    for (uint64_t s = top - (W - 1); s <= top; s++)
        CU_ASSERT_EQUAL(take(&w, s), IDEVS_ERR_REPLAY);
    /* moving the top by one pushes exactly one number out */
    CU_ASSERT_EQUAL(take(&w, top + 1), IDEVS_OK);
    CU_ASSERT_EQUAL(take(&w, top - (W - 1)), IDEVS_ERR_OUTSIDE_WINDOW);
    CU_ASSERT_EQUAL(take(&w, top - (W - 2)), IDEVS_ERR_REPLAY);
}

/* The edge at every alignment of the top within a word, as whole-word clearing would get it wrong. */
static void test_window_edge_every_alignment(void)
{
    for (uint64_t a = 0; a < 130; a++) {
        idevs_replay w;
        idevs_replay_init(&w);
        uint64_t top = 3 * W + a;
        for (uint64_t s = top - (W - 1); s <= top; s++)
            CU_ASSERT_EQUAL(take(&w, s), IDEVS_OK);
        for (uint64_t s = top - (W - 1); s <= top; s++)
            CU_ASSERT_EQUAL(idevs_replay_check(&w, s), IDEVS_ERR_REPLAY);
        CU_ASSERT_EQUAL(idevs_replay_check(&w, top - W), IDEVS_ERR_OUTSIDE_WINDOW);
        CU_ASSERT_EQUAL(idevs_replay_check(&w, top + 1), IDEVS_OK);
    }
}

static void test_jumps(void)
{
    const uint64_t jumps[] = {1, 2, 63, 64, 65, 127, 128, W - 65, W - 64, W - 1, W, W + 1, W + 63, W + 64,
                              2 * W, 1000 * W + 5};
    for (size_t j = 0; j < sizeof jumps / sizeof jumps[0]; j++) {
        for (uint64_t start = 1; start <= 130; start += 43) {
            idevs_replay w;
            idevs_replay_init(&w);
            /* fill a full window below start + W - 1 */
            uint64_t top = start + W - 1;
            for (uint64_t s = start; s <= top; s++)
                CU_ASSERT_EQUAL(take(&w, s), IDEVS_OK);
            uint64_t d = jumps[j], next = top + d;
            CU_ASSERT_EQUAL(take(&w, next), IDEVS_OK);
            CU_ASSERT_EQUAL(w.top, next);
            /* numbers between the old and the new top are fresh, those of the old window still inside are
             * replays, those pushed out are outside */
            for (uint64_t s = next - (W - 1); s < next; s++) {
                idevs_err want = s > top ? IDEVS_OK : (s >= start ? IDEVS_ERR_REPLAY : IDEVS_OK);
                CU_ASSERT_EQUAL(idevs_replay_check(&w, s), want);
            }
            CU_ASSERT_EQUAL(idevs_replay_check(&w, next - W), IDEVS_ERR_OUTSIDE_WINDOW);
            CU_ASSERT_EQUAL(idevs_replay_check(&w, next), IDEVS_ERR_REPLAY);
            /* the old bits of a word the top jumped over exactly once are gone */
            if (d > W - 1)
                for (uint64_t s = next - (W - 1); s < next; s++)
                    CU_ASSERT_EQUAL(idevs_replay_check(&w, s), IDEVS_OK);
        }
    }
}

static void test_near_uint64_max(void)
{
    idevs_replay w;
    idevs_replay_init(&w);
    const uint64_t max = UINT64_MAX;
    CU_ASSERT_EQUAL(take(&w, max - 2 * W), IDEVS_OK);
    for (uint64_t s = max - W - 10; s < max - 1; s++)
        CU_ASSERT_EQUAL(take(&w, s), IDEVS_OK);
    CU_ASSERT_EQUAL(take(&w, max), IDEVS_OK);
    CU_ASSERT_EQUAL(take(&w, max), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(take(&w, max - 1), IDEVS_OK);
    CU_ASSERT_EQUAL(take(&w, max - 1), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(take(&w, max - (W - 1)), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(take(&w, max - W), IDEVS_ERR_OUTSIDE_WINDOW);
    CU_ASSERT_EQUAL(take(&w, 1), IDEVS_ERR_OUTSIDE_WINDOW);
    CU_ASSERT_EQUAL(take(&w, 0), IDEVS_ERR_OUTSIDE_WINDOW);
    /* a single jump from 1 straight to the maximum */
    idevs_replay_init(&w);
    CU_ASSERT_EQUAL(take(&w, 1), IDEVS_OK);
    CU_ASSERT_EQUAL(take(&w, max), IDEVS_OK);
    CU_ASSERT_EQUAL(take(&w, 1), IDEVS_ERR_OUTSIDE_WINDOW);
    CU_ASSERT_EQUAL(take(&w, max - (W - 1)), IDEVS_OK);
}

/* ---- randomized comparison with a trivially correct model ---- */

#define SPAN 40000u /* sequence numbers base + 1 .. base + SPAN */

struct model {
    uint64_t base, top;   /* top is 0 before the first acceptance, otherwise base + k */
    unsigned char *seen;  /* seen[k] for sequence base + k */
};

static idevs_err model_check(const struct model *m, uint64_t seq)
{
    if (seq == 0)
        return IDEVS_ERR_OUTSIDE_WINDOW;
    if (m->top == 0 || seq > m->top)
        return IDEVS_OK;
    if (m->top - seq >= W)
        return IDEVS_ERR_OUTSIDE_WINDOW;
    return m->seen[seq - m->base] ? IDEVS_ERR_REPLAY : IDEVS_OK;
}

static uint64_t rng_state;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void random_walk(uint64_t base, uint64_t seed)
{
    struct model m = {base, 0, calloc(SPAN + 1, 1)};
    CU_ASSERT_FATAL(m.seen != NULL);
    idevs_replay w;
    idevs_replay_init(&w);
    rng_state = seed;
    uint64_t cur = 1;
    unsigned mismatches = 0;
    for (unsigned i = 0; i < 200000; i++) {
        uint64_t r = rng();
        switch (r % 8) {
        case 0: case 1: case 2: cur += 1; break;                 /* in order */
        case 3: cur += 1 + (r >> 8) % 70; break;                 /* small jump ahead */
        case 4: cur -= (r >> 8) % (W + 80) < cur ? (r >> 8) % (W + 80) : 0; break; /* back, around the edge */
        case 5: break;                                            /* duplicate */
        case 6: if ((r >> 8) % 50 == 0) cur += W - 2 + (r >> 16) % 5; break; /* about one window ahead */
        default: cur -= (r >> 8) % 64 < cur ? (r >> 8) % 64 : 0; break;      /* reordering */
        }
        if (cur > SPAN)
            cur = 1 + (r >> 20) % SPAN;
        uint64_t seq = (r >> 40) % 997 == 0 ? 0 : base + cur;
        idevs_err want = model_check(&m, seq);
        idevs_err got = idevs_replay_check(&w, seq);
        idevs_err acc = idevs_replay_accept(&w, seq);
        if (got != want || acc != want)
            mismatches++;
        if (want == IDEVS_OK) {
            m.seen[seq - base] = 1;
            if (m.top == 0 || seq > m.top)
                m.top = seq;
        }
        if (w.top != m.top)
            mismatches++;
    }
    CU_ASSERT_EQUAL(mismatches, 0);
    free(m.seen);
}

static void test_random_against_model(void)
{
    random_walk(0, 0x9e3779b97f4a7c15ull);
    random_walk(1000000007ull, 0x0123456789abcdefull);
    random_walk(UINT64_MAX - SPAN, 0xfeedfacecafebeefull);
}

static CU_TestInfo tests[] = {
    {"sequence 0 is never valid", test_zero_never_valid},
    {"in order, duplicates", test_in_order_and_duplicates},
    {"check changes nothing", test_check_changes_nothing},
    {"reordering within the window", test_reordering_within_window},
    {"window edge: W-1 below accepted, W below rejected", test_window_edge},
    {"window edge at every alignment", test_window_edge_every_alignment},
    {"jumps of a word, W and more clear old bits", test_jumps},
    {"near UINT64_MAX", test_near_uint64_max},
    {"random walks against a reference model", test_random_against_model},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return harness_run_suite("replay", NULL, NULL, tests);
}
