//! Cutting a checkpoint down to one rank's part before the family builds
//! it: for tensor parallel, each projection's share of rows or columns and
//! a config of the shares' sizes (heads, intermediate features); for
//! pipeline parallel, only the rank's layers. The loader reads the
//! checkpoint only after this (`crate::loader::load_part`), so a rank holds
//! its part, not the whole model, once loaded (each tensor it splits is
//! read whole, one batch of tensors at a time).

use mlx::Array;

use super::{Parallel, Shard};
use crate::error::{EngineError, Result};
use crate::model::{ModelConfig, Weights};

/// How a tensor of a layer is split for tensor parallelism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// Output features along `axis` (column parallel: `q/k/v_proj`,
    /// `gate/up_proj`, their biases and quantization scales).
    Outputs(i32),
    /// Input features along the last axis (row parallel: `o_proj`,
    /// `down_proj`, with their quantization scales).
    Inputs,
    /// A row-parallel bias: kept whole on rank 0, zero elsewhere, so the
    /// sum over ranks adds it once.
    RowBias,
}

/// The split of tensor `name` (a layer's, after sanitizing), or `None` for
/// one every rank holds whole (norms, the router, embedding, head).
fn split_of(name: &str) -> Option<Split> {
    let rest = name.strip_prefix("model.layers.")?;
    let (_, inner) = rest.split_once('.')?;
    let (module, param) = inner.rsplit_once('.')?;
    let column = [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
    ];
    let row = [
        "self_attn.o_proj",
        "mlp.down_proj",
        "mlp.switch_mlp.down_proj",
    ];
    if column.contains(&module) {
        Some(Split::Outputs(0))
    } else if matches!(
        module,
        "mlp.switch_mlp.gate_proj" | "mlp.switch_mlp.up_proj"
    ) {
        // Expert stacks `[experts, features, hidden]`.
        Some(Split::Outputs(1))
    } else if row.contains(&module) {
        Some(if param == "bias" {
            Split::RowBias
        } else {
            Split::Inputs
        })
    } else {
        None
    }
}

/// The layer index of a tensor under `model.layers.N.`.
fn layer_of(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("model.layers.")?;
    rest.split_once('.')?.0.parse().ok()
}

/// Cuts `weights` to this rank's part and returns the config the family
/// builds that part from (for tensor parallel, heads and intermediate
/// sizes divided by the group's size).
pub(crate) fn prepare(
    config: &ModelConfig,
    shard: &Shard,
    weights: &mut Weights,
) -> Result<ModelConfig> {
    let size = shard.size();
    match shard.parallel {
        Parallel::Tensor => {
            let local = tensor_config(config, size)?;
            let rank = shard.rank();
            weights.map(|name, array| match split_of(name) {
                None => Ok(None),
                Some(split) => cut(name, array, split, rank, size).map(Some),
            })?;
            Ok(local)
        }
        Parallel::Pipeline => {
            let total = config.num_hidden_layers.max(0) as usize;
            if total < size as usize {
                return Err(EngineError::Config(format!(
                    "pipeline parallel over {size} ranks needs at least {size} layers, the model \
                     has {total}"
                )));
            }
            let mine = shard.layers(total);
            weights.discard(|name| layer_of(name).is_some_and(|i| !mine.contains(&i)));
            Ok(config.clone())
        }
    }
}

/// Rank `rank`'s part of `array` under `split`.
fn cut(name: &str, array: &Array, split: Split, rank: i32, size: i32) -> Result<Array> {
    let axis = match split {
        Split::RowBias if rank == 0 => return Ok(array.clone()),
        Split::RowBias => return Ok(mlx::zeros(&array.shape(), array.dtype())?),
        Split::Outputs(axis) => axis,
        Split::Inputs => array.ndim() as i32 - 1,
    };
    let len = array.dim(axis)?;
    if len % size != 0 {
        return Err(EngineError::Config(format!(
            "tensor parallel over {size} ranks: {name} has {len} along axis {axis}, not divisible"
        )));
    }
    let part = len / size;
    // A gather, not a slice: a slice is a view that would keep the whole
    // tensor's buffer alive, and the point of the split is not to hold it.
    let rows = mlx::arange(
        f64::from(rank * part),
        f64::from((rank + 1) * part),
        1.0,
        mlx::Dtype::I32,
    )?;
    Ok(array.take(&rows, axis)?)
}

/// `config` with the per-rank head and feature counts of tensor
/// parallelism over `size` ranks (in its fields and in the JSON the
/// family's arguments are read from).
fn tensor_config(config: &ModelConfig, size: i32) -> Result<ModelConfig> {
    let mut local = config.clone();
    let head_dim = config.head_dim();
    let mut divide = |key: &str, value: i32| -> Result<i32> {
        if value % size != 0 {
            return Err(EngineError::Config(format!(
                "tensor parallel over {size} ranks needs {key} ({value}) divisible by {size}"
            )));
        }
        if let Some(obj) = local.raw.as_object_mut() {
            obj.insert(key.to_owned(), (value / size).into());
        }
        Ok(value / size)
    };
    let heads = divide("num_attention_heads", config.num_attention_heads)?;
    let kv_heads = divide("num_key_value_heads", config.num_kv_heads())?;
    let intermediate = divide("intermediate_size", config.intermediate_size)?;
    // A Mixture of Experts splits every expert's features.
    if let Some(v) = config
        .raw
        .get("moe_intermediate_size")
        .and_then(serde_json::Value::as_i64)
    {
        divide("moe_intermediate_size", v as i32)?;
    }
    if let Some(obj) = local.raw.as_object_mut() {
        obj.insert("head_dim".to_owned(), head_dim.into());
    }
    local.num_attention_heads = heads;
    local.num_key_value_heads = Some(kv_heads);
    local.intermediate_size = intermediate;
    local.head_dim = Some(head_dim);
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections_split_as_mlx_lm_shards_them() {
        let s = |n: &str| split_of(n);
        assert_eq!(
            s("model.layers.3.self_attn.q_proj.weight"),
            Some(Split::Outputs(0))
        );
        assert_eq!(
            s("model.layers.3.self_attn.v_proj.bias"),
            Some(Split::Outputs(0))
        );
        assert_eq!(
            s("model.layers.0.mlp.up_proj.scales"),
            Some(Split::Outputs(0))
        );
        assert_eq!(
            s("model.layers.0.self_attn.o_proj.weight"),
            Some(Split::Inputs)
        );
        assert_eq!(
            s("model.layers.0.self_attn.o_proj.biases"),
            Some(Split::Inputs)
        );
        assert_eq!(
            s("model.layers.0.self_attn.o_proj.bias"),
            Some(Split::RowBias)
        );
        assert_eq!(s("model.layers.0.mlp.down_proj.bias"), Some(Split::RowBias));
        assert_eq!(
            s("model.layers.1.mlp.switch_mlp.gate_proj.weight"),
            Some(Split::Outputs(1))
        );
        assert_eq!(
            s("model.layers.1.mlp.switch_mlp.down_proj.weight"),
            Some(Split::Inputs)
        );
        assert_eq!(
            s("model.layers.1.mlp.gate.weight"),
            None,
            "the router stays whole"
        );
        assert_eq!(s("model.layers.1.self_attn.q_norm.weight"), None);
        assert_eq!(s("model.embed_tokens.weight"), None);
        assert_eq!(s("lm_head.weight"), None);
    }

    #[test]
    fn row_parallel_parts_sum_to_the_whole_product() {
        let w = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &[2, 4]).unwrap();
        let x = Array::from_slice(&[1.0f32, -1.0, 2.0, 0.5], &[1, 4]).unwrap();
        let whole = x.matmul(&w.transpose(&[1, 0]).unwrap()).unwrap();
        let mut sum = mlx::zeros(&[1, 2], mlx::Dtype::F32).unwrap();
        for rank in 0..2 {
            let part = cut("o_proj.weight", &w, Split::Inputs, rank, 2).unwrap();
            let xs = x.slice_axis(1, rank * 2, rank * 2 + 2).unwrap();
            sum = sum
                .add(&xs.matmul(&part.transpose(&[1, 0]).unwrap()).unwrap())
                .unwrap();
        }
        assert_eq!(sum.to_vec::<f32>().unwrap(), whole.to_vec::<f32>().unwrap());
        let bias = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
        let b1 = cut("o_proj.bias", &bias, Split::RowBias, 1, 2).unwrap();
        assert_eq!(b1.to_vec::<f32>().unwrap(), [0.0, 0.0]);
        assert!(
            cut("q", &w, Split::Outputs(0), 0, 3).is_err(),
            "2 rows over 3 ranks"
        );
    }

    #[test]
    fn layer_indices_parse_from_tensor_names() {
        assert_eq!(layer_of("model.layers.12.mlp.up_proj.weight"), Some(12));
        assert_eq!(layer_of("model.norm.weight"), None);
    }
}
