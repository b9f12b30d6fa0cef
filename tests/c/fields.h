/*
 * fields.h -- what the damage tests (damage.h, test_corrupt.c) need to
 * patch an image's fields and judge the result: little-endian field
 * access, the header check, a cut of DATA behind a consistent header, and
 * the codes a reader may give for a damaged image.
 */
#ifndef PF_FIELDS_H
#define PF_FIELDS_H

#include <string.h>

#include "permafrost.h"

/* A code a reader or verify may give for a damaged image. */
static int clean_rc(int rc)
{
    return rc == PF_OK || rc == PF_ECORRUPT || rc == PF_EVERSION ||
           rc == PF_ELIMIT;
}

/* Little-endian fields, as the format stores them. */
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* header_check = pf_hash_bytes(header[0..120), 0) at offset 120 (R5). */
static void fix_header(uint8_t *b)
{
    uint64_t h = pf_hash_bytes(b, 120, 0);
    memcpy(b + 120, &h, 8);
}

/* Into b: the image buf with DATA cut to end at `cut`, behind a header
 * and a section table of one entry (DATA) that say so; its length. */
static uint64_t dmg_cut_data(uint8_t *b, const uint8_t *buf, uint64_t cut)
{
    memcpy(b, buf, (size_t)cut);
    memset(b + cut, 0, 32);
    put32(b + cut, 1);
    put32(b + cut + 4, 1);
    put64(b + cut + 8, 128);
    put64(b + cut + 16, cut - 128);
    put64(b + 48, cut + 32);
    put64(b + 64, cut);
    put32(b + 72, 1);
    fix_header(b);
    return cut + 32;
}

#endif
