/*
 * os.c -- the only file that talks to the operating system, and the only one
 * with #ifdef _WIN32: mapping an image file read-only (POSIX mmap, Win32 file
 * mapping), writing a file atomically (temporary file in the same folder,
 * flushed, renamed over the target), and the OS random source.
 * DESIGN.md, "The image": images are published atomically and never change.
 */
#if !defined(_WIN32)
#if !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700
#endif
#if !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE 1
#endif
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ------------------------------------------------------------------ shared */

/* "<path>.tmp.<pid>.<16 random hex digits>", malloc'd. */
static char *temp_name(const char *path, unsigned long pid, pf_error *err,
                       int *rc)
{
    uint8_t rnd[8];
    char hex[17];
    *rc = pf_os_random(rnd, sizeof rnd, err);
    if (*rc != PF_OK)
        return NULL;
    for (int i = 0; i < 8; i++) {
        static const char digits[] = "0123456789abcdef";
        hex[2 * i] = digits[rnd[i] >> 4];
        hex[2 * i + 1] = digits[rnd[i] & 15];
    }
    hex[16] = '\0';
    size_t plen = strlen(path);
    size_t cap = plen + 64;
    char *tmp = (char *)malloc(cap);
    if (!tmp) {
        *rc = pf_fail(err, PF_ENOMEM, "out of memory for a file name", 0);
        return NULL;
    }
    snprintf(tmp, cap, "%s.tmp.%lu.%s", path, pid, hex);
    return tmp;
}

#if defined(_WIN32)
/* ================================================================== Win32 */

#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <bcrypt.h>
#if defined(_MSC_VER)
#pragma comment(lib, "bcrypt")
#endif

/* UTF-8 -> UTF-16, malloc'd; NULL with *code set on failure. */
static wchar_t *widen(const char *s, pf_error *err, int *code)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    if (n <= 0) {
        *code = pf_fail(err, PF_EINVAL, "path is not valid UTF-8", 0);
        return NULL;
    }
    wchar_t *w = (wchar_t *)malloc((size_t)n * sizeof(wchar_t));
    if (!w) {
        *code = pf_fail(err, PF_ENOMEM, "out of memory for a file name", 0);
        return NULL;
    }
    if (MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n) != n) {
        free(w);
        *code = pf_fail(err, PF_EINVAL, "path is not valid UTF-8", 0);
        return NULL;
    }
    return w;
}

int pf_os_map_file(const char *path, pf_os_map *m, pf_error *err)
{
    int code = PF_OK;
    memset(m, 0, sizeof *m);
    wchar_t *wpath = widen(path, err, &code);
    if (!wpath)
        return code;
    HANDLE f = CreateFileW(wpath, GENERIC_READ,
                           FILE_SHARE_READ | FILE_SHARE_DELETE, NULL,
                           OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    free(wpath);
    if (f == INVALID_HANDLE_VALUE)
        return pf_fail_sys(err, "cannot open the image file",
                           (int)GetLastError());
    LARGE_INTEGER size;
    if (!GetFileSizeEx(f, &size)) {
        int e = (int)GetLastError();
        CloseHandle(f);
        return pf_fail_sys(err, "cannot get the size of the image file", e);
    }
    if (size.QuadPart == 0) {
        CloseHandle(f);
        return PF_CORRUPT(err, "file is empty: too small for an image header", 0);
    }
    if ((uint64_t)size.QuadPart > (uint64_t)SIZE_MAX) {
        CloseHandle(f);
        return pf_fail(err, PF_ELIMIT, "image file too large to map", 0);
    }
    HANDLE mh = CreateFileMappingW(f, NULL, PAGE_READONLY, 0, 0, NULL);
    if (!mh) {
        int e = (int)GetLastError();
        CloseHandle(f);
        return pf_fail_sys(err, "cannot map the image file", e);
    }
    void *p = MapViewOfFile(mh, FILE_MAP_READ, 0, 0, 0);
    int e = (int)GetLastError();
    /* The view keeps the mapping and the file alive on its own. */
    CloseHandle(mh);
    CloseHandle(f);
    if (!p)
        return pf_fail_sys(err, "cannot map the image file", e);
    m->base = p;
    m->len = (uint64_t)size.QuadPart;
    return PF_OK;
}

void pf_os_unmap(pf_os_map *m)
{
    if (m->base)
        UnmapViewOfFile(m->base);
    m->base = NULL;
    m->len = 0;
}

int pf_file_write_atomic(const char *path, const void *buf, uint64_t len,
                         pf_error *err)
{
    int code = PF_OK;
    if (!path || (!buf && len))
        return pf_fail(err, PF_EINVAL, "no path or no buffer", 0);
    char *tmp = temp_name(path, (unsigned long)GetCurrentProcessId(), err,
                          &code);
    if (!tmp)
        return code;
    wchar_t *wtmp = widen(tmp, err, &code);
    free(tmp);
    if (!wtmp)
        return code;
    wchar_t *wpath = widen(path, err, &code);
    if (!wpath) {
        free(wtmp);
        return code;
    }
    HANDLE f = CreateFileW(wtmp, GENERIC_WRITE, 0, NULL, CREATE_NEW,
                           FILE_ATTRIBUTE_NORMAL, NULL);
    if (f == INVALID_HANDLE_VALUE) {
        code = pf_fail_sys(err, "cannot create the temporary file",
                           (int)GetLastError());
        goto done;
    }
    const uint8_t *p = (const uint8_t *)buf;
    uint64_t left = len;
    while (left > 0) {
        DWORD chunk = left > 0x40000000u ? 0x40000000u : (DWORD)left;
        DWORD wrote = 0;
        if (!WriteFile(f, p, chunk, &wrote, NULL) || wrote == 0) {
            code = pf_fail_sys(err, "cannot write the temporary file",
                               (int)GetLastError());
            CloseHandle(f);
            DeleteFileW(wtmp);
            goto done;
        }
        p += wrote;
        left -= wrote;
    }
    if (!FlushFileBuffers(f)) {
        code = pf_fail_sys(err, "cannot flush the temporary file",
                           (int)GetLastError());
        CloseHandle(f);
        DeleteFileW(wtmp);
        goto done;
    }
    if (!CloseHandle(f)) {
        code = pf_fail_sys(err, "cannot close the temporary file",
                           (int)GetLastError());
        DeleteFileW(wtmp);
        goto done;
    }
    if (!MoveFileExW(wtmp, wpath,
                     MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH)) {
        code = pf_fail_sys(err, "cannot rename the temporary file into place",
                           (int)GetLastError());
        DeleteFileW(wtmp);
        goto done;
    }
done:
    free(wtmp);
    free(wpath);
    return code;
}

int pf_os_random(void *buf, size_t n, pf_error *err)
{
    uint8_t *p = (uint8_t *)buf;
    while (n > 0) {
        ULONG chunk = n > 0x10000000u ? 0x10000000u : (ULONG)n;
        if (BCryptGenRandom(NULL, p, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
            return pf_fail_sys(err, "the OS random source failed",
                               (int)GetLastError());
        p += chunk;
        n -= chunk;
    }
    return PF_OK;
}

#else
/* ================================================================== POSIX */

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__linux__) && defined(__has_include)
#if __has_include(<sys/random.h>)
#include <sys/random.h>
#define PF_HAVE_GETRANDOM 1
#endif
#endif

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

static int close_retry(int fd)
{
    /* POSIX leaves the descriptor state unspecified after EINTR; Linux has
     * closed it, so never retry (that could close someone else's fd). */
    return close(fd);
}

int pf_os_map_file(const char *path, pf_os_map *m, pf_error *err)
{
    memset(m, 0, sizeof *m);
    int fd;
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return pf_fail_sys(err, "cannot open the image file", errno);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close_retry(fd);
        return pf_fail_sys(err, "cannot stat the image file", e);
    }
    if (!S_ISREG(st.st_mode)) {
        close_retry(fd);
        return pf_fail_sys(err, "the image path is not a regular file",
                           S_ISDIR(st.st_mode) ? EISDIR : EINVAL);
    }
    if (st.st_size == 0) {
        close_retry(fd);
        return PF_CORRUPT(err, "file is empty: too small for an image header", 0);
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        close_retry(fd);
        return pf_fail(err, PF_ELIMIT, "image file too large to map", 0);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close_retry(fd); /* the mapping holds the file */
    if (p == MAP_FAILED)
        return pf_fail_sys(err, "cannot map the image file", e);
    m->base = p;
    m->len = (uint64_t)st.st_size;
    return PF_OK;
}

void pf_os_unmap(pf_os_map *m)
{
    if (m->base)
        munmap(m->base, (size_t)m->len);
    m->base = NULL;
    m->len = 0;
}

/* fsync the folder holding path, so that the rename is durable. Best effort:
 * some file systems refuse to open or sync a directory. */
static void sync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash) {
        dir = (char *)malloc(2);
        if (!dir) return;
        memcpy(dir, ".", 2);
    } else {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        dir = (char *)malloc(n + 1);
        if (!dir) return;
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd;
    do {
        fd = open(dir, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    free(dir);
    if (fd >= 0) {
        (void)fsync(fd);
        close_retry(fd);
    }
}

int pf_file_write_atomic(const char *path, const void *buf, uint64_t len,
                         pf_error *err)
{
    int code = PF_OK;
    if (!path || (!buf && len))
        return pf_fail(err, PF_EINVAL, "no path or no buffer", 0);
    char *tmp = temp_name(path, (unsigned long)getpid(), err, &code);
    if (!tmp)
        return code;
    int fd;
    do {
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        code = pf_fail_sys(err, "cannot create the temporary file", errno);
        free(tmp);
        return code;
    }
    const uint8_t *p = (const uint8_t *)buf;
    uint64_t left = len;
    while (left > 0) {
        size_t chunk = left > 0x40000000u ? 0x40000000u : (size_t)left;
        ssize_t n = write(fd, p, chunk);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            code = pf_fail_sys(err, "cannot write the temporary file", errno);
            goto fail_open;
        }
        if (n == 0) {
            code = pf_fail_sys(err, "cannot write the temporary file", EIO);
            goto fail_open;
        }
        p += n;
        left -= (uint64_t)n;
    }
    if (fsync(fd) != 0) {
        code = pf_fail_sys(err, "cannot flush the temporary file", errno);
        goto fail_open;
    }
    if (close_retry(fd) != 0) {
        code = pf_fail_sys(err, "cannot close the temporary file", errno);
        goto fail_closed;
    }
    if (rename(tmp, path) != 0) {
        code = pf_fail_sys(err, "cannot rename the temporary file into place",
                           errno);
        goto fail_closed;
    }
    free(tmp);
    sync_parent(path);
    return PF_OK;

fail_open:
    close_retry(fd);
fail_closed:
    unlink(tmp);
    free(tmp);
    return code;
}

int pf_os_random(void *buf, size_t n, pf_error *err)
{
    uint8_t *p = (uint8_t *)buf;
#if defined(PF_HAVE_GETRANDOM)
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ENOSYS)
                break; /* old kernel: fall back to /dev/urandom */
            return pf_fail_sys(err, "the OS random source failed", errno);
        }
        p += got;
        n -= (size_t)got;
    }
    if (n == 0)
        return PF_OK;
#endif
    int fd;
    do {
        fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return pf_fail_sys(err, "cannot open /dev/urandom", errno);
    while (n > 0) {
        ssize_t got = read(fd, p, n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            int e = got < 0 ? errno : EIO;
            close_retry(fd);
            return pf_fail_sys(err, "cannot read /dev/urandom", e);
        }
        p += got;
        n -= (size_t)got;
    }
    close_retry(fd);
    return PF_OK;
}

#endif /* _WIN32 */
