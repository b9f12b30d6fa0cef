/*
 * error.c -- error codes to names, and the helper every file uses to fill a
 * pf_error (include/permafrost.h, "Conventions").
 */
#include "internal.h"

const char *pf_strerror(int code)
{
    switch (code) {
    case PF_OK: return "success";
    case PF_ENOMEM: return "out of memory";
    case PF_EIO: return "I/O error";
    case PF_ECORRUPT: return "corrupt image";
    case PF_EVERSION: return "unsupported image version or feature";
    case PF_EINVAL: return "invalid argument";
    case PF_ENOTFOUND: return "not found";
    case PF_ETYPE: return "wrong type";
    case PF_ERANGE: return "index out of range";
    case PF_ELIMIT: return "limit exceeded";
    default: return "unknown error";
    }
}

int pf_fail(pf_error *err, int code, const char *msg, uint64_t offset)
{
    if (err) {
        err->code = code;
        err->msg = msg ? msg : pf_strerror(code);
        err->offset = offset;
        err->sys_errno = 0;
    }
    return code;
}

int pf_fail_sys(pf_error *err, const char *msg, int sys_errno)
{
    if (err) {
        err->code = PF_EIO;
        err->msg = msg ? msg : pf_strerror(PF_EIO);
        err->offset = 0;
        err->sys_errno = sys_errno;
    }
    return PF_EIO;
}
