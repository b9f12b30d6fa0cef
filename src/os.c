/*
 * os.c -- the only file that talks to the operating system, and the only one
 * with #ifdef _WIN32: mapping an image file read-only (POSIX mmap, Win32 file
 * mapping), writing a file atomically (temporary file in the same folder,
 * flushed, renamed over the target), named shared-memory segments (POSIX
 * shm_open, Win32 named file mappings backed by the paging file), process
 * ids and start times (for the registry of segment owners), the OS
 * random source, and threads (the full check's helpers, verify.c).
 * DESIGN.md, "The image": images are published atomically and never change.
 */
#if !defined(_WIN32)
#if !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700
#endif
#if !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE 1
#endif
#if defined(__APPLE__) && !defined(_DARWIN_C_SOURCE)
#define _DARWIN_C_SOURCE 1 /* sysctl's process records */
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
    pf_hex(rnd, sizeof rnd, hex);
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


/* A segment name: "/" then 1..30 characters of [A-Za-z0-9._-] (macOS
 * allows 31 characters in all; Win32 takes it after "Local\"). */
static int shm_name_ok(const char *name)
{
    if (!name || name[0] != '/')
        return 0;
    size_t n = strlen(name);
    if (n < 2 || n > PF_SHM_NAME_MAX)
        return 0;
    for (size_t i = 1; i < n; i++) {
        const char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* PF_ENOTFOUND, with the OS's error number kept. */
static int not_found(pf_error *err, const char *msg, int e)
{
    pf_fail(err, PF_ENOTFOUND, msg, 0);
    err->sys_errno = e;
    return PF_ENOTFOUND;
}

/* Is `name` (a folder entry) "<base>.v-<32 lowercase hex digits>", and not
 * the version `keep`? */
static int is_old_version(const char *name, const char *base, size_t blen,
                          const char *keep)
{
    if (strncmp(name, base, blen) != 0 || strncmp(name + blen, ".v-", 3) != 0)
        return 0;
    const char *hex = name + blen + 3;
    if (strlen(hex) != 32)
        return 0;
    for (int i = 0; i < 32; i++)
        if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
            return 0;
    return !keep || strcmp(hex, keep) != 0;
}

/* Where the file name in path starts (after its last separator): the
 * folder prefix, separator included, is the bytes before it. */
static const char *file_name_of(const char *path)
{
    const char *slash = strrchr(path, '/');
#if defined(_WIN32)
    const char *back = strrchr(path, '\\');
    if (back && (!slash || back > slash))
        slash = back;
#endif
    return slash ? slash + 1 : path;
}

/* prefix (n bytes) then name, malloc'd. */
static char *join(const char *prefix, size_t n, const char *name)
{
    size_t nlen = strlen(name);
    char *full = (char *)malloc(n + nlen + 1);
    if (full) {
        memcpy(full, prefix, n);
        memcpy(full + n, name, nlen + 1);
    }
    return full;
}

#define BAD_NAME(err) pf_fail(err, PF_EINVAL, "bad shared memory name: '/' " \
                              "then 1 to 30 of [A-Za-z0-9._-]", 0)

#if defined(_WIN32)
/* ================================================================== Win32 */

#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <bcrypt.h>
#include <process.h>
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

/* Reads `want` bytes at the file's current position into buf; the count
 * read (less at the end of a file that shrank meanwhile) in *got. 0, or
 * the OS error of a failure. */
static int read_all(HANDLE f, uint8_t *buf, uint64_t want, uint64_t *got)
{
    *got = 0;
    while (*got < want) {
        uint64_t left = want - *got;
        DWORD chunk = left > 0x40000000u ? 0x40000000u : (DWORD)left, n = 0;
        if (!ReadFile(f, buf + *got, chunk, &n, NULL))
            return (int)GetLastError();
        if (n == 0)
            break;
        *got += n;
    }
    return 0;
}

typedef HANDLE fhandle;

static void close_handle(fhandle f) { CloseHandle(f); }

/* Opens the file for reading, with its size. */
static int open_read(const char *path, fhandle *fh, uint64_t *size,
                     pf_error *err)
{
    int code = PF_OK;
    wchar_t *wpath = widen(path, err, &code);
    if (!wpath)
        return code;
    /* FILE_SHARE_DELETE: a publisher may rename a new pointer file over
     * this one while we read it. */
    HANDLE f = CreateFileW(wpath, GENERIC_READ,
                           FILE_SHARE_READ | FILE_SHARE_DELETE, NULL,
                           OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    free(wpath);
    if (f == INVALID_HANDLE_VALUE)
        return pf_fail_sys(err, "cannot open the image file",
                           (int)GetLastError());
    LARGE_INTEGER sz;
    if (!GetFileSizeEx(f, &sz)) {
        int e = (int)GetLastError();
        CloseHandle(f);
        return pf_fail_sys(err, "cannot get the size of the image file", e);
    }
    *fh = f;
    *size = (uint64_t)sz.QuadPart;
    return PF_OK;
}

/* Maps the whole file read-only; the view keeps it alive once the handle
 * is closed. */
static int map_handle(fhandle f, uint64_t size, pf_os_map *m, pf_error *err)
{
    HANDLE mh = CreateFileMappingW(f, NULL, PAGE_READONLY, 0, 0, NULL);
    if (!mh)
        return pf_fail_sys(err, "cannot map the image file", (int)GetLastError());
    void *p = MapViewOfFile(mh, FILE_MAP_READ, 0, 0, 0);
    int e = (int)GetLastError();
    CloseHandle(mh);
    if (!p)
        return pf_fail_sys(err, "cannot map the image file", e);
    m->base = p;
    m->len = size;
    return PF_OK;
}

int pf_os_not_found(int sys_errno)
{
    return sys_errno == ERROR_FILE_NOT_FOUND || sys_errno == ERROR_PATH_NOT_FOUND;
}

int pf_os_remove(const char *path)
{
    int code = PF_OK;
    wchar_t *w = widen(path, NULL, &code);
    int ok = w && DeleteFileW(w);
    free(w);
    return ok ? 0 : -1;
}

int pf_os_remove_versions(const char *path, const char *keep, unsigned *left,
                          pf_error *err)
{
    int code = PF_OK;
    const char *base = file_name_of(path);
    size_t dlen = (size_t)(base - path), blen = strlen(base);
    *left = 0;
    /* "<path>.v-*" finds the candidates; is_old_version decides. */
    size_t plen = strlen(path);
    char *pattern = (char *)malloc(plen + 5);
    if (!pattern)
        return pf_fail(err, PF_ENOMEM, "out of memory for a file name", 0);
    memcpy(pattern, path, plen);
    memcpy(pattern + plen, ".v-*", 5);
    wchar_t *wpattern = widen(pattern, err, &code);
    free(pattern);
    if (!wpattern)
        return code;
    WIN32_FIND_DATAW fd;
    HANDLE h = FindFirstFileW(wpattern, &fd);
    free(wpattern);
    if (h == INVALID_HANDLE_VALUE) {
        int e = (int)GetLastError();
        return e == ERROR_FILE_NOT_FOUND ? PF_OK
            : pf_fail_sys(err, "cannot list the image versions", e);
    }
    do {
        char name[MAX_PATH * 4];
        if (WideCharToMultiByte(CP_UTF8, 0, fd.cFileName, -1, name, sizeof name,
                                NULL, NULL) <= 0)
            continue;
        if (!is_old_version(name, base, blen, keep))
            continue;
        char *full = join(path, dlen, name);
        if (!full) {
            code = pf_fail(err, PF_ENOMEM, "out of memory for a file name", 0);
            break;
        }
        int c2 = PF_OK;
        wchar_t *wfull = widen(full, NULL, &c2);
        free(full);
        if (!wfull || !DeleteFileW(wfull))
            (*left)++; /* mapped by a reader: a later publish removes it */
        free(wfull);
    } while (FindNextFileW(h, &fd));
    FindClose(h);
    return code;
}

void pf_os_unmap(pf_os_map *m)
{
    if (m->copied)
        free(m->base);
    else if (m->base)
        UnmapViewOfFile(m->base);
    if (m->h_map)
        CloseHandle((HANDLE)m->h_map);
    m->base = NULL;
    m->h_map = NULL;
    m->len = 0;
}

/* "Local\<name without its slash>" as UTF-16, malloc'd. */
static wchar_t *shm_wide_name(const char *name, pf_error *err, int *code)
{
    char buf[PF_SHM_NAME_MAX + 8];
    snprintf(buf, sizeof buf, "Local\\%s", name + 1);
    return widen(buf, err, code);
}

int pf_os_shm_create(const char *name, uint64_t len, pf_os_map *m,
                     pf_error *err)
{
    int code = PF_OK;
    memset(m, 0, sizeof *m);
    if (!shm_name_ok(name))
        return BAD_NAME(err);
    if (len == 0 || len > (uint64_t)SIZE_MAX)
        return pf_fail(err, PF_EINVAL, "bad shared memory size", 0);
    wchar_t *wname = shm_wide_name(name, err, &code);
    if (!wname)
        return code;
    /* Backed by the paging file: the whole size is committed here, so a
     * system without room for it refuses now, not on a later write. */
    HANDLE h = CreateFileMappingW(INVALID_HANDLE_VALUE, NULL, PAGE_READWRITE,
                                  (DWORD)(len >> 32), (DWORD)(len & 0xFFFFFFFFu),
                                  wname);
    int e = (int)GetLastError();
    free(wname);
    if (!h)
        return pf_fail_sys(err, "cannot create the shared memory segment "
                           "(not enough memory or paging file?)", e);
    if (e == ERROR_ALREADY_EXISTS) {
        CloseHandle(h);
        return pf_fail_sys(err, "a shared memory segment of that name exists",
                           e);
    }
    void *p = MapViewOfFile(h, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, 0);
    if (!p) {
        e = (int)GetLastError();
        CloseHandle(h);
        return pf_fail_sys(err, "cannot map the shared memory segment", e);
    }
    m->base = p;
    m->len = len;
    m->h_map = h; /* the owner's handle: the segment lives while it is open */
    return PF_OK;
}

int pf_os_seal(pf_os_map *m, pf_error *err)
{
    DWORD old;
    if (!VirtualProtect(m->base, (SIZE_T)m->len, PAGE_READONLY, &old))
        return pf_fail_sys(err, "cannot make the segment read-only",
                           (int)GetLastError());
    return PF_OK;
}

int pf_os_shm_open(const char *name, pf_os_map *m, pf_error *err)
{
    int code = PF_OK;
    memset(m, 0, sizeof *m);
    if (!shm_name_ok(name))
        return BAD_NAME(err);
    wchar_t *wname = shm_wide_name(name, err, &code);
    if (!wname)
        return code;
    HANDLE h = OpenFileMappingW(FILE_MAP_READ, FALSE, wname);
    int e = (int)GetLastError();
    free(wname);
    if (!h) {
        if (e == ERROR_FILE_NOT_FOUND)
            return not_found(err, "no shared memory segment of that name: "
                             "its owner closed it or exited", e);
        return pf_fail_sys(err, "cannot open the shared memory segment", e);
    }
    void *p = MapViewOfFile(h, FILE_MAP_READ, 0, 0, 0);
    e = (int)GetLastError();
    CloseHandle(h); /* the view keeps the segment alive */
    if (!p)
        return pf_fail_sys(err, "cannot map the shared memory segment", e);
    MEMORY_BASIC_INFORMATION mbi;
    if (VirtualQuery(p, &mbi, sizeof mbi) == 0) {
        e = (int)GetLastError();
        UnmapViewOfFile(p);
        return pf_fail_sys(err, "cannot get the size of the segment", e);
    }
    m->base = p;
    m->len = (uint64_t)mbi.RegionSize; /* whole pages; the header says more */
    return PF_OK;
}

int pf_os_shm_unlink(const char *name, pf_error *err)
{
    /* A named mapping has no name to remove: it goes with the last handle
     * or view, the owner's included (pf_os_unmap). */
    if (!shm_name_ok(name))
        return BAD_NAME(err);
    return PF_OK;
}

uint64_t pf_os_pid(void)
{
    return (uint64_t)GetCurrentProcessId();
}

int pf_os_process_start(uint64_t pid, uint64_t *start, pf_error *err)
{
    *start = 0;
    if (pid == 0 || pid > 0xFFFFFFFFu)
        return pf_fail(err, PF_ENOTFOUND, "no such process", 0);
    HANDLE h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, (DWORD)pid);
    if (!h) {
        int e = (int)GetLastError();
        if (e == ERROR_INVALID_PARAMETER)
            return pf_fail(err, PF_ENOTFOUND, "no such process", 0);
        /* It exists, but we may not look at it. */
        return PF_OK;
    }
    DWORD status = 0;
    FILETIME created, exited, kernel, user;
    int alive = GetExitCodeProcess(h, &status) && status == STILL_ACTIVE;
    int have = GetProcessTimes(h, &created, &exited, &kernel, &user);
    CloseHandle(h);
    if (!alive)
        return pf_fail(err, PF_ENOTFOUND, "the process has exited", 0);
    if (have)
        *start = ((uint64_t)created.dwHighDateTime << 32) | created.dwLowDateTime;
    return PF_OK;
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

/* ------------------------------------------------------------------ files */

int pf_file_temp(const char *path, int scratch, pf_file *f, char **name,
                 pf_error *err)
{
    int code = PF_OK;
    f->open = 0;
    char *tmp = temp_name(path, (unsigned long)GetCurrentProcessId(), err,
                          &code);
    if (!tmp)
        return code;
    wchar_t *wtmp = widen(tmp, err, &code);
    if (!wtmp) {
        free(tmp);
        return code;
    }
    DWORD flags = FILE_ATTRIBUTE_NORMAL;
    if (scratch)
        flags = FILE_ATTRIBUTE_TEMPORARY | FILE_FLAG_DELETE_ON_CLOSE;
    HANDLE h = CreateFileW(wtmp, GENERIC_READ | GENERIC_WRITE,
                           scratch ? FILE_SHARE_DELETE : 0, NULL, CREATE_NEW,
                           flags, NULL);
    free(wtmp);
    if (h == INVALID_HANDLE_VALUE) {
        free(tmp);
        return pf_fail_sys(err, "cannot create a temporary file",
                           (int)GetLastError());
    }
    f->h = h;
    f->open = 1;
    if (scratch)
        free(tmp);
    else
        *name = tmp;
    return PF_OK;
}

static OVERLAPPED at_offset(uint64_t off)
{
    OVERLAPPED o;
    memset(&o, 0, sizeof o);
    o.Offset = (DWORD)off;
    o.OffsetHigh = (DWORD)(off >> 32);
    return o;
}

int pf_file_pwrite(pf_file *f, const void *buf, size_t n, uint64_t off,
                   pf_error *err)
{
    const uint8_t *p = (const uint8_t *)buf;
    while (n > 0) {
        DWORD chunk = n > 0x40000000u ? 0x40000000u : (DWORD)n, wrote = 0;
        OVERLAPPED o = at_offset(off);
        if (!WriteFile(f->h, p, chunk, &wrote, &o) || wrote == 0)
            return pf_fail_sys(err, "cannot write a temporary file",
                               (int)GetLastError());
        p += wrote;
        n -= wrote;
        off += wrote;
    }
    return PF_OK;
}

int pf_file_pread(pf_file *f, void *buf, size_t n, uint64_t off,
                  pf_error *err)
{
    uint8_t *p = (uint8_t *)buf;
    while (n > 0) {
        DWORD chunk = n > 0x40000000u ? 0x40000000u : (DWORD)n, got = 0;
        OVERLAPPED o = at_offset(off);
        if (!ReadFile(f->h, p, chunk, &got, &o))
            return pf_fail_sys(err, "cannot read a temporary file",
                               (int)GetLastError());
        if (got == 0)
            return pf_fail_sys(err, "a temporary file is shorter than "
                               "written", ERROR_HANDLE_EOF);
        p += got;
        n -= got;
        off += got;
    }
    return PF_OK;
}

int pf_file_truncate(pf_file *f, uint64_t len, pf_error *err)
{
    LARGE_INTEGER li;
    li.QuadPart = (LONGLONG)len;
    if (!SetFilePointerEx(f->h, li, NULL, FILE_BEGIN) || !SetEndOfFile(f->h))
        return pf_fail_sys(err, "cannot truncate a temporary file",
                           (int)GetLastError());
    return PF_OK;
}

int pf_file_sync(pf_file *f, pf_error *err)
{
    if (!FlushFileBuffers(f->h))
        return pf_fail_sys(err, "cannot flush the temporary file",
                           (int)GetLastError());
    return PF_OK;
}

void pf_file_close(pf_file *f)
{
    if (f && f->open) {
        CloseHandle(f->h);
        f->open = 0;
    }
}

int pf_file_rename(const char *from, const char *to, pf_error *err)
{
    int code = PF_OK;
    wchar_t *wf = widen(from, err, &code);
    if (!wf)
        return code;
    wchar_t *wt = widen(to, err, &code);
    if (!wt) {
        free(wf);
        return code;
    }
    if (!MoveFileExW(wf, wt, MOVEFILE_REPLACE_EXISTING |
                             MOVEFILE_WRITE_THROUGH))
        code = pf_fail_sys(err, "cannot rename the temporary file into place",
                           (int)GetLastError());
    free(wf);
    free(wt);
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

/* Threads (verify.c's helpers): a function run once on a new thread. */
struct pf_thread {
    HANDLE h;
    void (*fn)(void *);
    void *arg;
};

static unsigned __stdcall thread_main(void *p)
{
    pf_thread *t = (pf_thread *)p;
    t->fn(t->arg);
    return 0;
}

int pf_thread_start(pf_thread **out, void (*fn)(void *), void *arg)
{
    pf_thread *t = (pf_thread *)malloc(sizeof *t);
    if (!t)
        return PF_ENOMEM;
    t->fn = fn;
    t->arg = arg;
    t->h = (HANDLE)_beginthreadex(NULL, 0, thread_main, t, 0, NULL);
    if (!t->h) {
        free(t);
        return PF_EIO;
    }
    *out = t;
    return PF_OK;
}

void pf_thread_join(pf_thread *t)
{
    WaitForSingleObject(t->h, INFINITE);
    CloseHandle(t->h);
    free(t);
}

void *pf_os_zalloc(size_t n)
{
    /* committed pages read as zeros; each is made on first touch */
    return VirtualAlloc(NULL, n ? n : 1, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
}

void pf_os_zfree(void *p, size_t n)
{
    (void)n;
    if (p)
        VirtualFree(p, 0, MEM_RELEASE);
}

unsigned pf_cpu_count(void)
{
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    return si.dwNumberOfProcessors ? (unsigned)si.dwNumberOfProcessors : 1;
}

#else
/* ================================================================== POSIX */

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <signal.h>
#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif
#include <sys/mman.h>
#include <sys/stat.h>
#include <pthread.h>
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

/* Reads `want` bytes from fd into buf; the count read (less at the end of
 * a file that shrank meanwhile) in *got. 0, or the errno of a failure. */
static int read_all(int fd, uint8_t *buf, uint64_t want, uint64_t *got)
{
    *got = 0;
    while (*got < want) {
        uint64_t left = want - *got;
        ssize_t n = read(fd, buf + *got,
                         left > 0x40000000u ? 0x40000000u : (size_t)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            break;
        *got += (uint64_t)n;
    }
    return 0;
}

typedef int fhandle;

static void close_handle(fhandle fd) { close_retry(fd); }

/* Opens the file for reading, with its size; it must be a regular file. */
static int open_read(const char *path, fhandle *fh, uint64_t *size,
                     pf_error *err)
{
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
    *fh = fd;
    *size = (uint64_t)st.st_size;
    return PF_OK;
}

/* Maps the whole file read-only; the mapping holds the file once the
 * descriptor is closed. */
static int map_handle(fhandle fd, uint64_t size, pf_os_map *m, pf_error *err)
{
    void *p = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return pf_fail_sys(err, "cannot map the image file", errno);
    m->base = p;
    m->len = size;
    return PF_OK;
}

int pf_os_not_found(int sys_errno)
{
    return sys_errno == ENOENT;
}

int pf_os_remove(const char *path)
{
    return unlink(path);
}

int pf_os_remove_versions(const char *path, const char *keep, unsigned *left,
                          pf_error *err)
{
    const char *base = file_name_of(path);
    size_t dlen = (size_t)(base - path), blen = strlen(base);
    *left = 0;
    char *folder = dlen ? join(path, dlen, "") : join(".", 1, "");
    if (!folder)
        return pf_fail(err, PF_ENOMEM, "out of memory for a file name", 0);
    DIR *d = opendir(folder);
    free(folder);
    if (!d)
        return pf_fail_sys(err, "cannot list the image versions", errno);
    int code = PF_OK;
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        if (!is_old_version(ent->d_name, base, blen, keep))
            continue;
        char *full = join(path, dlen, ent->d_name);
        if (!full) {
            code = pf_fail(err, PF_ENOMEM, "out of memory for a file name", 0);
            break;
        }
        /* Readers that map it keep their pages (POSIX unlink). */
        if (unlink(full) != 0 && errno != ENOENT)
            (*left)++;
        free(full);
    }
    closedir(d);
    return code;
}

void pf_os_unmap(pf_os_map *m)
{
    if (m->copied)
        free(m->base);
    else if (m->base)
        munmap(m->base, (size_t)m->len);
    m->base = NULL;
    m->len = 0;
}


/* ------------------------------------------------------- shared memory */

int pf_os_shm_create(const char *name, uint64_t len, pf_os_map *m,
                     pf_error *err)
{
    memset(m, 0, sizeof *m);
    if (!shm_name_ok(name))
        return BAD_NAME(err);
    if (len == 0 || len > (uint64_t)SIZE_MAX || len > (uint64_t)INT64_MAX)
        return pf_fail(err, PF_EINVAL, "bad shared memory size", 0);
    int fd;
    do {
        fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return pf_fail_sys(err, "cannot create the shared memory segment",
                           errno);
    int e = 0;
    const char *what = NULL;
    /* Sized once (macOS allows a single ftruncate on a new object). */
    if (ftruncate(fd, (off_t)len) != 0) {
        e = errno;
        what = "cannot size the shared memory segment";
        goto fail;
    }
#if defined(__linux__)
    /* Reserve every page now: on a full tmpfs (/dev/shm, often 64 MiB in
     * a container) this fails here, instead of a SIGBUS on a later write
     * or read. File systems that cannot reserve say EINVAL/EOPNOTSUPP. */
    e = posix_fallocate(fd, 0, (off_t)len);
    if (e == ENOSPC) {
        what = "not enough shared memory (/dev/shm is full or too small) "
               "for the image; free some, enlarge it, or freeze() to a file";
        goto fail;
    }
    if (e != 0 && e != EINVAL && e != EOPNOTSUPP && e != ENOSYS) {
        what = "cannot reserve the shared memory segment";
        goto fail;
    }
    e = 0;
#endif
    void *p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        e = errno;
        what = "cannot map the shared memory segment";
        goto fail;
    }
    close_retry(fd);
    m->base = p;
    m->len = len;
    return PF_OK;
fail:
    close_retry(fd);
    shm_unlink(name);
    return pf_fail_sys(err, what, e);
}

int pf_os_seal(pf_os_map *m, pf_error *err)
{
    if (mprotect(m->base, (size_t)m->len, PROT_READ) != 0)
        return pf_fail_sys(err, "cannot make the segment read-only", errno);
    return PF_OK;
}

int pf_os_shm_open(const char *name, pf_os_map *m, pf_error *err)
{
    memset(m, 0, sizeof *m);
    if (!shm_name_ok(name))
        return BAD_NAME(err);
    int fd;
    do {
        fd = shm_open(name, O_RDONLY, 0);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        if (errno == ENOENT)
            return not_found(err, "no shared memory segment of that name: "
                             "its owner closed it or exited", ENOENT);
        return pf_fail_sys(err, "cannot open the shared memory segment", errno);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close_retry(fd);
        return pf_fail_sys(err, "cannot stat the shared memory segment", e);
    }
    if (st.st_size <= 0) {
        close_retry(fd);
        return PF_CORRUPT(err, "empty shared memory segment: no image", 0);
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        close_retry(fd);
        return pf_fail(err, PF_ELIMIT, "segment too large to map", 0);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close_retry(fd);
    if (p == MAP_FAILED)
        return pf_fail_sys(err, "cannot map the shared memory segment", e);
    m->base = p;
    m->len = (uint64_t)st.st_size; /* macOS may round it up to pages */
    return PF_OK;
}

int pf_os_shm_unlink(const char *name, pf_error *err)
{
    if (!shm_name_ok(name))
        return BAD_NAME(err);
    if (shm_unlink(name) != 0) {
        if (errno == ENOENT)
            return not_found(err, "no shared memory segment of that name",
                             ENOENT);
        return pf_fail_sys(err, "cannot remove the shared memory segment",
                           errno);
    }
    return PF_OK;
}

/* ------------------------------------------------------------ processes */

uint64_t pf_os_pid(void)
{
    return (uint64_t)getpid();
}

int pf_os_process_start(uint64_t pid, uint64_t *start, pf_error *err)
{
    *start = 0;
    if (pid == 0 || pid > (uint64_t)INT32_MAX)
        return not_found(err, "no such process", ESRCH);
#if defined(__linux__)
    /* /proc/PID/stat: "pid (comm) state ppid ... starttime(22) ...";
     * comm may hold spaces and parentheses, so fields count from the last
     * ')'. A zombie has exited: it is gone for our purposes. */
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%llu/stat", (unsigned long long)pid);
    int fd;
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd >= 0) {
        ssize_t n;
        do {
            n = read(fd, buf, sizeof buf - 1);
        } while (n < 0 && errno == EINTR);
        close_retry(fd);
        if (n > 0) {
            buf[n] = '\0';
            const char *q = strrchr(buf, ')');
            if (q && q[1] == ' ') {
                q += 2;
                if (*q == 'Z' || *q == 'X')
                    return not_found(err, "the process has exited", ESRCH);
                for (int field = 3; field < 22 && q; field++) {
                    q = strchr(q, ' ');
                    if (q)
                        q++;
                }
                if (q) {
                    *start = strtoull(q, NULL, 10);
                    return PF_OK;
                }
            }
        }
        return PF_OK; /* it exists; its start time is unknown */
    }
    if (errno == ENOENT)
        return not_found(err, "no such process", ESRCH);
#elif defined(__APPLE__)
    int mib[4] = {CTL_KERN, KERN_PROC, KERN_PROC_PID, (int)pid};
    struct kinfo_proc kp;
    size_t klen = sizeof kp;
    memset(&kp, 0, sizeof kp);
    if (sysctl(mib, 4, &kp, &klen, NULL, 0) == 0) {
        if (klen == 0 || kp.kp_proc.p_pid != (pid_t)pid ||
            kp.kp_proc.p_stat == SZOMB)
            return not_found(err, "no such process", ESRCH);
        *start = (uint64_t)kp.kp_proc.p_starttime.tv_sec * 1000000u +
                 (uint64_t)kp.kp_proc.p_starttime.tv_usec;
        return PF_OK;
    }
#endif
    /* Elsewhere (and if /proc is missing): is it alive? */
    if (kill((pid_t)pid, 0) == 0 || errno == EPERM)
        return PF_OK;
    return not_found(err, "no such process", ESRCH);
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

/* ------------------------------------------------------------------ files */

int pf_file_temp(const char *path, int scratch, pf_file *f, char **name,
                 pf_error *err)
{
    int code = PF_OK;
    f->open = 0;
    char *tmp = temp_name(path, (unsigned long)getpid(), err, &code);
    if (!tmp)
        return code;
    int fd;
    do {
        fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        code = pf_fail_sys(err, "cannot create a temporary file", errno);
        free(tmp);
        return code;
    }
    f->fd = fd;
    f->open = 1;
    if (scratch) {
        unlink(tmp); /* nameless from now on: nothing to clean up later */
        free(tmp);
    } else {
        *name = tmp;
    }
    return PF_OK;
}

int pf_file_pwrite(pf_file *f, const void *buf, size_t n, uint64_t off,
                   pf_error *err)
{
    const uint8_t *p = (const uint8_t *)buf;
    while (n > 0) {
        size_t chunk = n > 0x40000000u ? 0x40000000u : n;
        ssize_t w = pwrite(f->fd, p, chunk, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return pf_fail_sys(err, "cannot write a temporary file",
                               w < 0 ? errno : EIO);
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return PF_OK;
}

int pf_file_pread(pf_file *f, void *buf, size_t n, uint64_t off,
                  pf_error *err)
{
    uint8_t *p = (uint8_t *)buf;
    while (n > 0) {
        size_t chunk = n > 0x40000000u ? 0x40000000u : n;
        ssize_t r = pread(f->fd, p, chunk, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return pf_fail_sys(err, r < 0 ? "cannot read a temporary file"
                               : "a temporary file is shorter than written",
                               r < 0 ? errno : EIO);
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return PF_OK;
}

int pf_file_truncate(pf_file *f, uint64_t len, pf_error *err)
{
    int rc;
    do {
        rc = ftruncate(f->fd, (off_t)len);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0)
        return pf_fail_sys(err, "cannot truncate a temporary file", errno);
    return PF_OK;
}

int pf_file_sync(pf_file *f, pf_error *err)
{
    if (fsync(f->fd) != 0)
        return pf_fail_sys(err, "cannot flush the temporary file", errno);
    return PF_OK;
}

void pf_file_close(pf_file *f)
{
    if (f && f->open) {
        close_retry(f->fd);
        f->open = 0;
    }
}

int pf_file_rename(const char *from, const char *to, pf_error *err)
{
    if (rename(from, to) != 0)
        return pf_fail_sys(err, "cannot rename the temporary file into place",
                           errno);
    sync_parent(to);
    return PF_OK;
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

/* Threads (verify.c's helpers): a function run once on a new thread. */
struct pf_thread {
    pthread_t t;
    void (*fn)(void *);
    void *arg;
};

static void *thread_main(void *p)
{
    pf_thread *t = (pf_thread *)p;
    t->fn(t->arg);
    return NULL;
}

int pf_thread_start(pf_thread **out, void (*fn)(void *), void *arg)
{
    pf_thread *t = (pf_thread *)malloc(sizeof *t);
    if (!t)
        return PF_ENOMEM;
    t->fn = fn;
    t->arg = arg;
    if (pthread_create(&t->t, NULL, thread_main, t) != 0) {
        free(t);
        return PF_EIO;
    }
    *out = t;
    return PF_OK;
}

void pf_thread_join(pf_thread *t)
{
    pthread_join(t->t, NULL);
    free(t);
}

/* Below this, pf_os_zalloc is calloc; from it, its own mapping. */
#define ZALLOC_MAP_MIN ((size_t)1 << 20)
#ifndef MAP_ANONYMOUS
#define MAP_ANONYMOUS MAP_ANON
#endif

void *pf_os_zalloc(size_t n)
{
    if (n < ZALLOC_MAP_MIN)
        return calloc(n ? n : 1, 1);
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#if defined(MADV_HUGEPAGE)
    (void)madvise(p, n, MADV_HUGEPAGE); /* a hint: fewer TLB misses */
#endif
    /* Each page written once now: a page first read would be the shared
     * zero page, and its first write later a copy whose TLB flush
     * interrupts every other thread of the process. */
    volatile uint8_t *b = (volatile uint8_t *)p;
    for (size_t k = 0; k < n; k += 4096)
        b[k] = 0;
    return p;
}

void pf_os_zfree(void *p, size_t n)
{
    if (!p)
        return;
    if (n < ZALLOC_MAP_MIN)
        free(p);
    else
        munmap(p, n);
}

unsigned pf_cpu_count(void)
{
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

#endif /* _WIN32 */

/* ------------------------------------------------------- both */

/* pf_os_map_file, or with copy the file read into private memory. */
static int load_file(const char *path, pf_os_map *m, int copy, pf_error *err)
{
    memset(m, 0, sizeof *m);
    fhandle fh = 0;
    uint64_t size = 0, got = 0;
    int rc = open_read(path, &fh, &size, err), e = 0;
    if (rc != PF_OK)
        return rc;
    if (size < PF_HEADER_LEN) {
        /* Read, never mapped: perhaps a pointer file, which a mapping
         * would keep from being replaced on Win32. */
        e = read_all(fh, m->small, size, &got);
        m->small_len = (uint32_t)got;
        m->len = got;
    } else if (size > (uint64_t)SIZE_MAX) {
        rc = pf_fail(err, PF_ELIMIT, "image file too large to map", 0);
    } else if (copy) {
        uint8_t *buf = (uint8_t *)malloc((size_t)size);
        if (!buf) {
            rc = pf_fail(err, PF_ENOMEM, "out of memory for a copy of the image", 0);
        } else if ((e = read_all(fh, buf, size, &got)) != 0) {
            free(buf);
        } else {
            m->base = buf;
            m->len = got; /* short if it shrank: the header check says so */
            m->copied = 1;
        }
    } else {
        rc = map_handle(fh, size, m, err);
    }
    close_handle(fh);
    if (e) {
        memset(m, 0, sizeof *m);
        rc = pf_fail_sys(err, "cannot read the image file", e);
    }
    return rc;
}

int pf_os_map_file(const char *path, pf_os_map *m, pf_error *err)
{
    return load_file(path, m, 0, err);
}

int pf_os_read_file(const char *path, pf_os_map *m, pf_error *err)
{
    return load_file(path, m, 1, err);
}
