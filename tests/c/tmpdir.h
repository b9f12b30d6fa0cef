/*
 * tmpdir.h -- a private folder for a C test that writes files: its path
 * (`dir`, under TMPDIR or TEMP), paths inside it, a count of what it holds
 * (to check that nothing is left behind), and the portable mkdir/rmdir/getpid
 * the tests use. Include once per test program.
 */
#ifndef PF_TMPDIR_H
#define PF_TMPDIR_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(_WIN32)
#include <direct.h>
#include <process.h>
#define test_getpid() ((long)_getpid())
#define test_mkdir(p) _mkdir(p)
#define test_rmdir(p) _rmdir(p)
#else
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#define test_getpid() ((long)getpid())
#define test_mkdir(p) mkdir((p), 0700)
#define test_rmdir(p) rmdir(p)
#endif

static char dir[512];

/* Creates "<TMPDIR>/<prefix>_<pid>" as `dir`; 0 on success. */
static int tmpdir_make(const char *prefix)
{
    const char *base = getenv("TMPDIR");
    if (!base) base = getenv("TEMP");
    if (!base) base = ".";
    snprintf(dir, sizeof dir, "%s/%s_%ld", base, prefix, test_getpid());
    return test_mkdir(dir);
}

static void path_in(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

/* Number of entries in dir, "." and ".." excepted (POSIX only: -1 else). */
static int count_entries(void)
{
#if defined(_WIN32)
    return -1;
#else
    DIR *d = opendir(dir);
    if (!d)
        return -2;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
#endif
}

#endif /* PF_TMPDIR_H */
