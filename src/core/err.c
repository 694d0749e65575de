#include "core/err.h"

#include <string.h>

enum grpc_code cairn_err_code(int rc)
{
    switch (rc) {
#define CAIRN_ERR_CODE(name, val, code, msg)                                   \
    case val:                                                                  \
        return code;
        CAIRN_ERRORS(CAIRN_ERR_CODE)
#undef CAIRN_ERR_CODE
    default:
        return GRPC_UNKNOWN;
    }
}

const char *cairn_err_msg(int rc)
{
    switch (rc) {
#define CAIRN_ERR_MSG(name, val, code, msg)                                    \
    case val:                                                                  \
        return msg;
        CAIRN_ERRORS(CAIRN_ERR_MSG)
#undef CAIRN_ERR_MSG
    default:
        return rc < 0 && rc > -1000 ? strerror(-rc) : "unknown error";
    }
}
