/* The shim's binding of MLX's distributed layer (mlx/distributed/ops.h):
 * a group of processes and the collectives over it. Same contract as
 * shim.h: 0 on success, 1 when MLX threw (message in mlxs_last_error()).
 */
#pragma once

#include "shim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mlxs_group mlxs_group;

/* Whether `backend` ("ring", "jaccl", "mpi", "nccl" or "any") is built in. */
int mlxs_dist_is_available(const char* backend, bool* out);
/* Joins the group `backend` describes (from its environment: MLX_HOSTFILE
 * and MLX_RANK for the ring). With `strict`, failing to join throws;
 * otherwise a one-process group comes back. */
int mlxs_dist_init(const char* backend, bool strict, mlxs_group** out);
void mlxs_group_free(mlxs_group* g);
mlxs_group* mlxs_group_clone(const mlxs_group* g);
int mlxs_group_rank(const mlxs_group* g);
int mlxs_group_size(const mlxs_group* g);

int mlxs_dist_all_sum(const mlxs_array* x, const mlxs_group* g, mlxs_array** out);
int mlxs_dist_all_max(const mlxs_array* x, const mlxs_group* g, mlxs_array** out);
int mlxs_dist_all_gather(const mlxs_array* x, const mlxs_group* g, mlxs_array** out);
int mlxs_dist_send(const mlxs_array* x, int dst, const mlxs_group* g, mlxs_array** out);
int mlxs_dist_recv(
    const int32_t* shape,
    size_t ndim,
    int dtype,
    int src,
    const mlxs_group* g,
    mlxs_array** out);
int mlxs_dist_recv_like(const mlxs_array* x, int src, const mlxs_group* g, mlxs_array** out);

#ifdef __cplusplus
}
#endif
