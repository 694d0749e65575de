/* cairn's error codes. Functions return 0, a negative errno, or one of the
 * CAIRN_E* codes below. The table gives each code the gRPC status and the
 * byte-exact message etcd sends for it (etcd's rpctypes/error.go); the rpc
 * layer is the only place that turns codes into gRPC statuses. */
#ifndef CORE_ERR_H
#define CORE_ERR_H

/* gRPC status codes (grpc/codes). */
enum grpc_code {
    GRPC_OK = 0,
    GRPC_CANCELLED = 1,
    GRPC_UNKNOWN = 2,
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_DEADLINE_EXCEEDED = 4,
    GRPC_NOT_FOUND = 5,
    GRPC_ALREADY_EXISTS = 6,
    GRPC_PERMISSION_DENIED = 7,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_FAILED_PRECONDITION = 9,
    GRPC_ABORTED = 10,
    GRPC_OUT_OF_RANGE = 11,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14,
    GRPC_DATA_LOSS = 15,
    GRPC_UNAUTHENTICATED = 16,
};

/* Cluster membership and leadership (etcd's rpctypes). */
#define CAIRN_MEMBER_ERRORS(X)                                                   \
    X(CAIRN_EMEMBEREXIST, -1060, GRPC_FAILED_PRECONDITION,                       \
      "etcdserver: member ID already exist")                                     \
    X(CAIRN_EPEERURLEXIST, -1061, GRPC_FAILED_PRECONDITION,                      \
      "etcdserver: Peer URLs already exists")                                    \
    X(CAIRN_EMEMBERNOTENOUGHSTARTED, -1062, GRPC_FAILED_PRECONDITION,            \
      "etcdserver: re-configuration failed due to not enough started members")   \
    X(CAIRN_EMEMBERBADURLS, -1063, GRPC_INVALID_ARGUMENT,                        \
      "etcdserver: given member URLs are invalid")                               \
    X(CAIRN_EMEMBERNOTLEARNER, -1064, GRPC_FAILED_PRECONDITION,                  \
      "etcdserver: can only promote a learner member")                           \
    X(CAIRN_ELEARNERNOTREADY, -1065, GRPC_FAILED_PRECONDITION,                   \
      "etcdserver: can only promote a learner member which is in sync with "     \
      "leader")                                                                  \
    X(CAIRN_ETOOMANYLEARNERS, -1066, GRPC_FAILED_PRECONDITION,                   \
      "etcdserver: too many learner members in cluster")                         \
    X(CAIRN_ENOTLEADER, -1067, GRPC_FAILED_PRECONDITION,                         \
      "etcdserver: not leader")                                                  \
    X(CAIRN_ELEADERCHANGED, -1068, GRPC_UNAVAILABLE,                             \
      "etcdserver: leader changed")                                              \
    X(CAIRN_ENOTLEARNERRPC, -1069, GRPC_UNAVAILABLE,                             \
      "etcdserver: rpc not supported for learner")                               \
    X(CAIRN_EUNHEALTHY, -1070, GRPC_UNAVAILABLE,                                 \
      "etcdserver: unhealthy cluster")                                           \
    X(CAIRN_ETIMEOUTLEADERFAIL, -1071, GRPC_UNAVAILABLE,                         \
      "etcdserver: request timed out, possibly due to previous leader failure")

#define CAIRN_ERRORS(X)                                                          \
    X(CAIRN_EEMPTYKEY, -1001, GRPC_INVALID_ARGUMENT,                             \
      "etcdserver: key is not provided")                                         \
    X(CAIRN_EKEYNOTFOUND, -1002, GRPC_INVALID_ARGUMENT,                          \
      "etcdserver: key not found")                                               \
    X(CAIRN_EVALUEPROVIDED, -1003, GRPC_INVALID_ARGUMENT,                        \
      "etcdserver: value is provided")                                           \
    X(CAIRN_ELEASEPROVIDED, -1004, GRPC_INVALID_ARGUMENT,                        \
      "etcdserver: lease is provided")                                           \
    X(CAIRN_ETOOMANYOPS, -1005, GRPC_INVALID_ARGUMENT,                           \
      "etcdserver: too many operations in txn request")                          \
    X(CAIRN_EDUPKEY, -1006, GRPC_INVALID_ARGUMENT,                               \
      "etcdserver: duplicate key given in txn request")                          \
    X(CAIRN_EBADSORT, -1007, GRPC_INVALID_ARGUMENT,                              \
      "etcdserver: invalid sort option")                                         \
    X(CAIRN_ETOOLARGE, -1008, GRPC_INVALID_ARGUMENT,                             \
      "etcdserver: request is too large")                                        \
    X(CAIRN_ECOMPACTED, -1009, GRPC_OUT_OF_RANGE,                                \
      "etcdserver: mvcc: required revision has been compacted")                  \
    X(CAIRN_EFUTUREREV, -1010, GRPC_OUT_OF_RANGE,                                \
      "etcdserver: mvcc: required revision is a future revision")                \
    X(CAIRN_ENOSPACE, -1011, GRPC_RESOURCE_EXHAUSTED,                            \
      "etcdserver: mvcc: database space exceeded")                               \
    X(CAIRN_ELEASENOTFOUND, -1012, GRPC_NOT_FOUND,                               \
      "etcdserver: requested lease not found")                                   \
    X(CAIRN_ESTOPPED, -1013, GRPC_UNAVAILABLE, "etcdserver: server stopped")     \
    X(CAIRN_ENOLEADER, -1014, GRPC_UNAVAILABLE, "etcdserver: no leader")         \
    X(CAIRN_ETIMEOUT, -1015, GRPC_UNAVAILABLE, "etcdserver: request timed out")  \
    X(CAIRN_ETOOMANYREQUESTS, -1016, GRPC_RESOURCE_EXHAUSTED,                    \
      "etcdserver: too many requests")                                           \
    X(CAIRN_EUNIMPLEMENTED, -1017, GRPC_UNIMPLEMENTED, "")                       \
    X(CAIRN_EBADMSG, -1018, GRPC_INTERNAL, "grpc: error unmarshalling request")  \
    X(CAIRN_EMSGTOOLARGE, -1019, GRPC_RESOURCE_EXHAUSTED,                        \
      "grpc: received message larger than max")                                  \
    X(CAIRN_ECOMPRESSED, -1020, GRPC_UNIMPLEMENTED,                              \
      "grpc: Decompressor is not installed for grpc-encoding")                   \
    X(CAIRN_EDEADLINE, -1021, GRPC_DEADLINE_EXCEEDED,                            \
      "context deadline exceeded")                                               \
    X(CAIRN_EMEMBERNOTFOUND, -1022, GRPC_NOT_FOUND,                              \
      "etcdserver: member not found")                                            \
    X(CAIRN_ESTORE, -1023, GRPC_UNKNOWN, "etcdserver: storage failure")        \
    X(CAIRN_ELEASEEXISTS, -1024, GRPC_FAILED_PRECONDITION,                       \
      "etcdserver: lease already exists")                                        \
    X(CAIRN_ELEASETTLTOOLARGE, -1025, GRPC_OUT_OF_RANGE,                         \
      "etcdserver: too large lease TTL")                                         \
    X(CAIRN_ECORRUPT, -1026, GRPC_DATA_LOSS, "etcdserver: corrupt cluster")      \
    X(CAIRN_EBADTRANSFEREE, -1027, GRPC_FAILED_PRECONDITION,                     \
      "etcdserver: bad leader transferee")                                       \
    /* the NOSPACE alarm refusing a request (ENOSPACE is the store full) */      \
    X(CAIRN_ECAPPED, -1028, GRPC_RESOURCE_EXHAUSTED,                             \
      "etcdserver: mvcc: database space exceeded")                               \
    CAIRN_MEMBER_ERRORS(X)                                                       \
    CAIRN_AUTH_ERRORS(X)

/* etcd's auth errors (rpctypes/error.go; ENOPASSWORDUSER is not in etcd's
 * gRPC table, so etcd sends it as UNKNOWN with the auth package's text). */
#define CAIRN_AUTH_ERRORS(X)                                                     \
    X(CAIRN_EROOTUSERNOTEXIST, -1029, GRPC_FAILED_PRECONDITION,                  \
      "etcdserver: root user does not exist")                                    \
    X(CAIRN_EROOTROLENOTEXIST, -1030, GRPC_FAILED_PRECONDITION,                  \
      "etcdserver: root user does not have root role")                           \
    X(CAIRN_EUSEREXISTS, -1031, GRPC_FAILED_PRECONDITION,                        \
      "etcdserver: user name already exists")                                    \
    X(CAIRN_EUSEREMPTY, -1032, GRPC_INVALID_ARGUMENT,                            \
      "etcdserver: user name is empty")                                          \
    X(CAIRN_EUSERNOTFOUND, -1033, GRPC_FAILED_PRECONDITION,                      \
      "etcdserver: user name not found")                                         \
    X(CAIRN_EROLEEXISTS, -1034, GRPC_FAILED_PRECONDITION,                        \
      "etcdserver: role name already exists")                                    \
    X(CAIRN_EROLENOTFOUND, -1035, GRPC_FAILED_PRECONDITION,                      \
      "etcdserver: role name not found")                                         \
    X(CAIRN_EROLEEMPTY, -1036, GRPC_INVALID_ARGUMENT,                            \
      "etcdserver: role name is empty")                                          \
    X(CAIRN_EAUTHFAILED, -1037, GRPC_INVALID_ARGUMENT,                           \
      "etcdserver: authentication failed, invalid user ID or password")          \
    X(CAIRN_EPERMDENIED, -1038, GRPC_PERMISSION_DENIED,                          \
      "etcdserver: permission denied")                                           \
    X(CAIRN_EROLENOTGRANTED, -1039, GRPC_FAILED_PRECONDITION,                    \
      "etcdserver: role is not granted to the user")                             \
    X(CAIRN_EPERMNOTGRANTED, -1040, GRPC_FAILED_PRECONDITION,                    \
      "etcdserver: permission is not granted to the role")                       \
    X(CAIRN_EAUTHNOTENABLED, -1041, GRPC_FAILED_PRECONDITION,                    \
      "etcdserver: authentication is not enabled")                               \
    X(CAIRN_EINVALIDAUTHTOKEN, -1042, GRPC_UNAUTHENTICATED,                      \
      "etcdserver: invalid auth token")                                          \
    X(CAIRN_EINVALIDAUTHMGMT, -1043, GRPC_INVALID_ARGUMENT,                      \
      "etcdserver: invalid auth management")                                     \
    X(CAIRN_EAUTHOLDREV, -1044, GRPC_INVALID_ARGUMENT,                           \
      "etcdserver: revision of auth store is old")                               \
    X(CAIRN_ENOPASSWORDUSER, -1045, GRPC_UNKNOWN,                                \
      "auth: authentication failed, password was given for no password user")

enum cairn_err {
#define CAIRN_ERR_ENUM(name, val, code, msg) name = val,
    CAIRN_ERRORS(CAIRN_ERR_ENUM)
#undef CAIRN_ERR_ENUM
};

/* The gRPC code and message for @rc (a CAIRN_E* code or -errno). Unknown
 * codes map to UNKNOWN with strerror's text, as etcd's togRPCError does. */
enum grpc_code cairn_err_code(int rc);
const char *cairn_err_msg(int rc);

#endif
