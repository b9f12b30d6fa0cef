/*
 * check.h -- the tiny harness of the C unit tests: CHECK macros that count
 * passes and failures, and a report whose last line is "N passed, N failed".
 * Each tests/c/test_*.c is a standalone program returning nonzero on failure.
 */
#ifndef PF_CHECK_H
#define PF_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long check_passed, check_failed;

static void check_fail_at(const char *file, int line, const char *what)
{
    check_failed++;
    if (check_failed <= 50)
        fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, what);
}

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (cond) check_passed++;                                           \
        else check_fail_at(__FILE__, __LINE__, #cond);                      \
    } while (0)

#define CHECK_EQ_U64(a, b)                                                  \
    do {                                                                    \
        uint64_t check_a_ = (uint64_t)(a), check_b_ = (uint64_t)(b);        \
        if (check_a_ == check_b_) check_passed++;                           \
        else {                                                              \
            check_fail_at(__FILE__, __LINE__, #a " == " #b);                \
            if (check_failed <= 50)                                         \
                fprintf(stderr, "    0x%016" PRIX64 " != 0x%016" PRIX64     \
                        "\n", check_a_, check_b_);                          \
        }                                                                   \
    } while (0)

/* Evaluates a call returning a pf status and checks it equals `want`. */
#define CHECK_RC(expr, want)                                                \
    do {                                                                    \
        int check_rc_ = (expr);                                             \
        if (check_rc_ == (want)) check_passed++;                            \
        else {                                                              \
            check_fail_at(__FILE__, __LINE__, #expr " == " #want);          \
            if (check_failed <= 50)                                         \
                fprintf(stderr, "    got %d\n", check_rc_);                 \
        }                                                                   \
    } while (0)

/* Aborts the test program: for setup steps later checks depend on. */
#define REQUIRE(cond)                                                       \
    do {                                                                    \
        if (cond) check_passed++;                                           \
        else {                                                              \
            check_fail_at(__FILE__, __LINE__, #cond);                       \
            printf("%ld passed, %ld failed\n", check_passed, check_failed); \
            exit(1);                                                        \
        }                                                                   \
    } while (0)

static int check_report(void)
{
    printf("%ld passed, %ld failed\n", check_passed, check_failed);
    return check_failed != 0;
}

#endif /* PF_CHECK_H */
