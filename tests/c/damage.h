/*
 * damage.h -- every truncation point and many single-byte changes of a
 * small image, each opened, walked (walk.h) and verified, with the section
 * checksums kept and then cleared: every result is a clean code, and what
 * verify passes walks without a fault. A test adds its own check of each
 * opened variant (test_ordered.c runs the ordered queries) and its own byte
 * values to try. Used by test_objects.c and test_ordered.c (test_corrupt.c
 * has a sweep of its own, and shares fields.h with this one).
 */
#ifndef PF_DAMAGE_H
#define PF_DAMAGE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "permafrost.h"
#include "walk.h"
#include "fields.h"

/* Counts over every variant tried, for the test's report. */
static long dmg_variants, dmg_verified, dmg_outcome[16];

/* A test's own check of an opened variant: verified says whether verify
 * passed it (with the checksums cleared). 0 if all was well, else nonzero
 * with a message in *why. */
typedef int (*dmg_check_fn)(pf_image *img, int verified, const char **why);

/* Opens b[0..len), walks it, verifies it (with the checksums, then with
 * them cleared) and runs `check` on the second: every result clean, and
 * an image that verifies walks without a fault. 1 if all was well. */
static int dmg_open_walk(const uint8_t *b, uint64_t len, dmg_check_fn check)
{
    pf_image *img;
    pf_error e;
    int ok = 1;
    dmg_variants++;
    memset(&e, 0, sizeof e);
    int rc = pf_image_open_buffer(b, len, &img, &e);
    if (rc != PF_OK)
        return clean_rc(rc) && rc < 0 && e.msg && e.code == rc;
    walk_state ws = {0, 20000, 60, 0, 0};
    int wrc = walk(img, pf_image_root(img), 0, &ws);
    pf_image_close(img);
    if (!clean_rc(wrc)) {
        fprintf(stderr, "    unclean walk result %d\n", wrc);
        ok = 0;
    }
    dmg_outcome[-wrc < 16 && wrc <= 0 ? -wrc : 15]++;
    uint8_t *scratch = (uint8_t *)malloc((size_t)len);
    REQUIRE(scratch != NULL);
    for (int pass = 0; pass < 2; pass++) {
        memcpy(scratch, b, (size_t)len);
        if (pass == 1) {
            uint64_t stab = get64(b + 64);
            uint32_t nsec;
            memcpy(&nsec, b + 72, 4);
            for (uint32_t k = 0; k < nsec && stab + 32 * (k + 1) <= len; k++)
                put64(scratch + stab + 32 * k + 24, 0);
        }
        if (pf_image_open_buffer(scratch, len, &img, NULL) != PF_OK)
            continue;
        memset(&e, 0, sizeof e);
        int vrc = pf_image_verify(img, NULL, &e);
        if (!clean_rc(vrc) || (vrc != PF_OK && (!e.msg || e.code != vrc))) {
            fprintf(stderr, "    unclean verify result %d\n", vrc);
            ok = 0;
        }
        if (vrc == PF_OK)
            dmg_verified++;
        if (vrc == PF_OK && pass == 1) {
            /* what verifies must walk: walk the very bytes again */
            walk_state w2 = {0, 20000, 60, 0, 0};
            int rc2 = walk(img, pf_image_root(img), 0, &w2);
            if (rc2 != PF_OK && rc2 != PF_ELIMIT) {
                fprintf(stderr, "    verified, but the walk found %d\n", rc2);
                ok = 0;
            }
        }
        const char *why = "";
        if (pass == 1 && check && check(img, vrc == PF_OK, &why) != 0) {
            fprintf(stderr, "    %s%s\n", why, vrc == PF_OK ? " (verified)" : "");
            ok = 0;
        }
        pf_image_close(img);
    }
    free(scratch);
    return ok;
}

/* The sweep over the image buf[0..len) (which must verify): every
 * truncation of the buffer, every truncation of DATA behind a consistent
 * header and section table, and every byte set to each of `vals` (n of
 * them) and to its neighbours and flips; header bytes also with the check
 * fixed. CHECKs that no variant was unclean. */
static void dmg_sweep(const uint8_t *buf, uint64_t len, const char *name,
                      const uint8_t *vals, size_t n, dmg_check_fn check)
{
    uint8_t *b = (uint8_t *)malloc((size_t)len + 64);
    REQUIRE(b != NULL);
    long bad = 0;
    CHECK(dmg_open_walk(buf, len, check));
    /* Every truncation of the buffer: shorter than image_size. */
    for (uint64_t cut = 0; cut < len; cut++) {
        pf_image *img;
        memcpy(b, buf, (size_t)cut);
        int rc = pf_image_open_buffer(b, cut, &img, NULL);
        bad += rc != PF_ECORRUPT;
    }
    /* Every truncation of DATA behind a consistent header and table. */
    const uint64_t data_end = get64(buf + 64);
    for (uint64_t cut = 129; cut < data_end; cut++)
        bad += !dmg_open_walk(b, dmg_cut_data(b, buf, cut), check);
    /* Every byte: flipped, its neighbours, and the test's values. */
    for (uint64_t i = 0; i < len; i++) {
        const uint8_t o = buf[i];
        for (size_t k = 0; k < n + 5; k++) {
            const uint8_t rel[5] = {(uint8_t)(o ^ 0x01), (uint8_t)(o ^ 0x80),
                                    (uint8_t)(o ^ 0xFF), (uint8_t)(o + 1),
                                    (uint8_t)(o - 1)};
            const uint8_t x = k < 5 ? rel[k] : vals[k - 5];
            if (x == o)
                continue;
            memcpy(b, buf, (size_t)len);
            b[i] = x;
            bad += !dmg_open_walk(b, len, check);
            if (i < 120) {
                fix_header(b);
                bad += !dmg_open_walk(b, len, check);
            }
        }
    }
    if (bad)
        fprintf(stderr, "    %s: %ld unclean variants\n", name, bad);
    CHECK(bad == 0);
    free(b);
}

#endif
