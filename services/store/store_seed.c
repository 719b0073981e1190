/* The store's generated data set; see store_seed.h. */
#include "store_seed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Prices in cents. Three entries make the boundary sales: 149.99 (walking boots), 150.00 (the rain jacket and
 * two pairs of wool socks of docs/CASESTUDY.md) and 150.01 (down vest and merino beanie). */
static const seed_item catalogue[] = {
    {"JKT-204", "Rain jacket", 12900},      {"SCK-011", "Wool socks", 1050},       {"BTS-310", "Walking boots", 14999},
    {"VST-118", "Down vest", 11951},        {"HAT-052", "Merino beanie", 3050},    {"GLV-027", "Leather gloves", 3499},
    {"SCF-033", "Cashmere scarf", 6900},    {"TSH-101", "Cotton T-shirt", 1800},   {"JNS-240", "Slim jeans", 5900},
    {"SHT-122", "Linen shirt", 4500},       {"SWT-150", "Fisherman jumper", 8900}, {"CT-402", "Wool overcoat", 18900},
    {"BLT-015", "Belt", 2450},              {"UMB-008", "Umbrella", 1699},         {"BAG-230", "Canvas tote", 2200},
    {"BKP-335", "Daypack 25 L", 6499},      {"BTL-019", "Water bottle", 1250},     {"TRC-044", "Head torch", 2999},
    {"TRS-160", "Hiking trousers", 7450},   {"FLC-175", "Fleece", 5499},           {"SNK-280", "Trainers", 9500},
    {"SLP-041", "Slippers", 2799},          {"PJM-090", "Pyjamas", 3900},          {"SNG-060", "Sunglasses", 11500},
    {"WLT-025", "Wallet", 3200},            {"MAP-003", "Ordnance map", 1099},     {"TEA-012", "Flask", 2150},
    {"PNC-070", "Poncho", 1999},            {"THR-085", "Thermal top", 2650},      {"GTR-020", "Gaiters", 3499},
};
#define CATALOGUE_COUNT (sizeof catalogue / sizeof catalogue[0])
#define ITEM_BOOTS 2
#define ITEM_JACKET 0
#define ITEM_SOCKS 1
#define ITEM_VEST 3
#define ITEM_BEANIE 4

static const char *const first_names[] = {
    "Ana",   "Sam",    "Priya", "Callum", "Fatima", "Oliver", "Mei",    "Declan", "Amara",  "Hamish",
    "Zara",  "Tomasz", "Isla",  "Kwame",  "Niamh",  "Rhys",   "Aisha",  "Euan",   "Chloe",  "Arjun",
    "Freya", "Mateo",  "Eilidh", "Yusuf", "Grace",  "Ewan",   "Leila",  "Finlay", "Sofia",  "Kofi",
};
static const char *const last_names[] = {
    "Lima",    "Okafor",  "Patel",    "MacLeod", "Khan",    "Smith",   "Chen",     "Byrne",   "Mensah",  "Fraser",
    "Ahmed",   "Nowak",   "Campbell", "Boateng", "Murphy",  "Evans",   "Hussain",  "Stewart", "Taylor",  "Sharma",
    "Robertson", "Garcia", "Morrison", "Ali",   "Wilson",  "Reid",    "Rahman",   "Brown",   "Rossi",   "Owusu",
};
static const char *const streets[] = {
    "Harbour Street", "Queen Street",  "Castle Terrace", "Mill Lane",    "Victoria Road", "Church Street",
    "Station Road",   "Park Avenue",   "King's Road",    "High Street",  "Albert Place",  "Marine Parade",
    "Rose Street",    "George Square", "Bridge Street",  "Orchard Close",
};
static const struct {
    const char *area, *city, *outward;
} places[] = {
    {"Leith", "Edinburgh", "EH6"},      {"Morningside", "Edinburgh", "EH10"}, {"Partick", "Glasgow", "G11"},
    {"Finnieston", "Glasgow", "G3"},    {"Roath", "Cardiff", "CF24"},         {"Clifton", "Bristol", "BS8"},
    {"Jesmond", "Newcastle", "NE2"},    {"Headingley", "Leeds", "LS6"},       {"Didsbury", "Manchester", "M20"},
    {"Hackney", "London", "E8"},        {"Brixton", "London", "SW2"},         {"Jericho", "Oxford", "OX2"},
    {"Ropewalk", "Nottingham", "NG1"},  {"Holgate", "York", "YO24"},          {"Ferryhill", "Aberdeen", "AB11"},
};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* xorshift64*, seeded through splitmix64: small, fast and the same everywhere. */
typedef struct rng {
    uint64_t s;
} rng;

static void rng_init(rng *r, uint64_t seed)
{
    uint64_t z = seed + 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    r->s = (z ^ (z >> 31)) | 1u;
}

static uint64_t rng_next(rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545f4914f6cdd1du;
}

/* Uniform in [0, n), n > 0 (rejection: no modulo bias). */
static size_t rng_below(rng *r, size_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do
        v = rng_next(r);
    while (v >= limit);
    return (size_t)(v % n);
}

const seed_item *store_seed_catalogue(size_t *count)
{
    *count = CATALOGUE_COUNT;
    return catalogue;
}

void store_seed_free(seed_data *d)
{
    free(d->customers);
    free(d->sales);
    memset(d, 0, sizeof *d);
}

static void make_customer(rng *r, size_t index, unsigned phone_suffix, seed_customer *c)
{
    static const char letters[] = "ABDEFGHJLNPQRSTUWXYZ"; /* the letters a UK inward code uses */
    snprintf(c->id, sizeof c->id, "C-%04zu", index + 1);
    snprintf(c->phone, sizeof c->phone, "+44 7700 900%03u", phone_suffix);
    size_t p = rng_below(r, COUNT(places));
    snprintf(c->address, sizeof c->address, "%zu %s, %s, %s %s %zu%c%c", rng_below(r, 180) + 1,
             streets[rng_below(r, COUNT(streets))], places[p].area, places[p].city, places[p].outward,
             rng_below(r, 9) + 1, letters[rng_below(r, sizeof letters - 1)], letters[rng_below(r, sizeof letters - 1)]);
}

static void add_line(seed_sale *s, size_t item, int qty)
{
    s->lines[s->line_count].item = item;
    s->lines[s->line_count].qty = qty;
    s->line_count++;
    s->total_cents += catalogue[item].price_cents * qty;
}

static void random_sale(rng *r, seed_sale *s)
{
    static const size_t line_weights[] = {30, 35, 25, 10}; /* 1, 2, 3 or 4 items */
    size_t pick = rng_below(r, 100), lines = 1;
    for (size_t acc = line_weights[0]; pick >= acc && lines < SEED_LINES_MAX; acc += line_weights[lines++])
        ;
    while (s->line_count < lines) {
        size_t item = rng_below(r, CATALOGUE_COUNT);
        int taken = 0;
        for (size_t k = 0; k < s->line_count; k++)
            taken |= s->lines[k].item == item;
        if (taken)
            continue;
        size_t q = rng_below(r, 100);
        add_line(s, item, q < 70 ? 1 : q < 92 ? 2 : 3);
    }
}

int store_seed_generate(size_t customers, size_t sales, uint64_t seed, seed_data *out)
{
    memset(out, 0, sizeof *out);
    if (customers < 1 || customers > SEED_CUSTOMERS_MAX || sales < 1 || sales > SEED_SALES_MAX)
        return -1;
    out->customers = calloc(customers, sizeof *out->customers);
    out->sales = calloc(sales, sizeof *out->sales);
    if (out->customers == NULL || out->sales == NULL) {
        store_seed_free(out);
        return -1;
    }
    out->customer_count = customers;
    out->sale_count = sales;
    out->items = catalogue;
    out->item_count = CATALOGUE_COUNT;
    rng r;
    rng_init(&r, seed);

    /* customers: distinct names while they last, distinct phone numbers (a shuffled drama range) */
    unsigned phones[1000];
    for (unsigned i = 0; i < 1000; i++)
        phones[i] = i;
    for (size_t i = 999; i > 0; i--) {
        size_t j = rng_below(&r, i + 1);
        unsigned t = phones[i];
        phones[i] = phones[j];
        phones[j] = t;
    }
    size_t names = COUNT(first_names) * COUNT(last_names);
    for (size_t i = 0; i < customers; i++) {
        seed_customer *c = &out->customers[i];
        for (int attempt = 0;; attempt++) {
            snprintf(c->name, sizeof c->name, "%s %s", first_names[rng_below(&r, COUNT(first_names))],
                     last_names[rng_below(&r, COUNT(last_names))]);
            int dup = 0;
            for (size_t k = 0; k < i && !dup; k++)
                dup = strcmp(out->customers[k].name, c->name) == 0;
            if (!dup || i >= names / 2 || attempt > 50)
                break;
        }
        make_customer(&r, i, phones[i], c);
    }

    /* sales: a few minutes apart from 09:00 UTC on 21 November 2026 */
    struct tm base = {.tm_year = 2026 - 1900, .tm_mon = 10, .tm_mday = 21, .tm_hour = 9};
    time_t t = timegm(&base);
    size_t boundary[3] = {sales / 4, sales / 2, (3 * sales) / 4};
    for (size_t i = 0; i < sales; i++) {
        seed_sale *s = &out->sales[i];
        snprintf(s->sale_id, sizeof s->sale_id, "S-%06zu", i + 1);
        s->customer = rng_below(&r, customers);
        t += (time_t)(60 * (rng_below(&r, 15) + 1) + rng_below(&r, 60));
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(s->time, sizeof s->time, "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (sales >= 3 && i == boundary[0]) {
            add_line(s, ITEM_BOOTS, 1); /* 149.99 */
        } else if (sales >= 3 && i == boundary[1]) {
            add_line(s, ITEM_JACKET, 1); /* 150.00 */
            add_line(s, ITEM_SOCKS, 2);
        } else if (sales >= 3 && i == boundary[2]) {
            add_line(s, ITEM_VEST, 1); /* 150.01 */
            add_line(s, ITEM_BEANIE, 1);
        } else {
            random_sale(&r, s);
        }
    }
    return 0;
}
