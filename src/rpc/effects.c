/* What an applied command changes beside the store: the lessor's deadlines
 * and the auth cache. Registered with apply_on_effects, so it runs for every
 * command the log applies on this member, whichever member proposed it. */
#include <string.h>

#include "auth/auth.h"
#include "core/err.h"
#include "lease/lease.h"
#include "repl/repl.h"
#include "rpc/rpc.h"

static void lease_effects(struct apply_cmd *cmd)
{
    if (cmd->op == APPLY_LEASE_GRANT && cmd->rc == 0) {
        Etcdserverpb__LeaseGrantRequest *r =
            etcdserverpb__lease_grant_request__unpack(NULL, cmd->req_len,
                                                      cmd->req);
        if (r != NULL) {
            lease_granted(r->id, r->ttl);
            etcdserverpb__lease_grant_request__free_unpacked(r, NULL);
        }
    } else if (cmd->op == APPLY_LEASE_REVOKE &&
               (cmd->rc == 0 || cmd->rc == CAIRN_ELEASENOTFOUND)) {
        Etcdserverpb__LeaseRevokeRequest *r =
            etcdserverpb__lease_revoke_request__unpack(NULL, cmd->req_len,
                                                       cmd->req);
        if (r != NULL) {
            lease_revoked(r->id);
            etcdserverpb__lease_revoke_request__free_unpacked(r, NULL);
        }
    }
}

static void auth_effects(struct apply_cmd *cmd)
{
    if (cmd->op == APPLY_AUTH_USER_DELETE ||
        cmd->op == APPLY_AUTH_USER_CHANGE_PASSWORD) {
        /* etcd's tokenProvider.invalidateUser */
        ProtobufCMessage *m = protobuf_c_message_unpack(
            cmd->op == APPLY_AUTH_USER_DELETE
                ? &etcdserverpb__auth_user_delete_request__descriptor
                : &etcdserverpb__auth_user_change_password_request__descriptor,
            NULL, cmd->req_len, cmd->req);
        if (m != NULL) {
            /* both requests have the name as field 1 */
            const char *name =
                cmd->op == APPLY_AUTH_USER_DELETE
                    ? ((Etcdserverpb__AuthUserDeleteRequest *)m)->name
                    : ((Etcdserverpb__AuthUserChangePasswordRequest *)m)->name;
            auth_tokens_invalidate_user(name, strlen(name));
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }
    auth_reload(srv->mvcc);
}

void rpc_apply_effects(struct apply_cmd *cmd)
{
    if (cmd->op == APPLY_LEASE_GRANT || cmd->op == APPLY_LEASE_REVOKE)
        lease_effects(cmd);
    else if (cmd->op >= APPLY_AUTH_ENABLE &&
             cmd->op <= APPLY_AUTH_ROLE_REVOKE_PERMISSION && cmd->rc == 0)
        auth_effects(cmd);
    else if (cmd->op >= APPLY_MEMBER_ADD && cmd->op <= APPLY_MEMBER_PUBLISH &&
             cmd->rc == 0)
        repl_members_changed();
}
