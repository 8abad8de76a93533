//! Gradient-boosted trees compiled from their ONNX graph into flat arrays.
//!
//! ONNX Runtime's `TreeEnsembleClassifier` kernel walks a general tree structure per row
//! (about 1.7 µs a row for 100 trees of depth 3 here). A binary classifier of the shape
//! `model/train.py` writes — one `TreeEnsembleClassifier` (`BRANCH_LEQ` splits, one weight
//! per leaf, `LOGISTIC`) feeding `probabilities` through `Identity` — is a sum of leaf
//! weights and a sigmoid, so it is compiled here into one array of nodes and evaluated with a
//! compare and an index per level. [`crate::Model::load`] uses it only after it has scored a
//! set of probe rows exactly as the ONNX Runtime session does; anything else (another
//! operator, mode, transform or class layout) is scored by ONNX Runtime.

use std::collections::HashMap;

use nudge_data_plane_features::{FeatureVector, N_FEATURES};
use prost::Message;

/// The parts of ONNX's `ModelProto` the compiler reads (field numbers from `onnx.proto`).
#[derive(Clone, PartialEq, Message)]
struct OnnxModel {
    #[prost(message, optional, tag = "7")]
    graph: Option<OnnxGraph>,
}

#[derive(Clone, PartialEq, Message)]
struct OnnxGraph {
    #[prost(message, repeated, tag = "1")]
    node: Vec<OnnxNode>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<OnnxIgnored>,
}

/// A message whose contents do not matter, only its presence.
#[derive(Clone, PartialEq, Message)]
struct OnnxIgnored {}

#[derive(Clone, PartialEq, Message)]
struct OnnxNode {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<OnnxAttribute>,
    #[prost(string, tag = "7")]
    domain: String,
}

#[derive(Clone, PartialEq, Message)]
struct OnnxAttribute {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(bytes = "vec", tag = "4")]
    s: Vec<u8>,
    #[prost(float, repeated, tag = "7")]
    floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    strings: Vec<Vec<u8>>,
}

/// Where a comparison leads: another node, or a leaf's weight.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Next {
    Node(u32),
    Leaf(f32),
}

/// One split: `row[feature] <= threshold` goes to `if_true`, otherwise (NaN included, as
/// ONNX Runtime does without missing-value tracking) to `if_false`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Split {
    feature: u32,
    threshold: f32,
    if_true: Next,
    if_false: Next,
}

/// A compiled binary tree ensemble: `p = sigmoid(base + Σ leaf weights)`.
///
/// Every tree is laid out complete to the ensemble's depth `D`, in breadth-first order:
/// `2^D - 1` splits, then `2^D` leaves. A leaf above depth `D` becomes a split that sends
/// both ways to copies of itself (threshold +∞), so scoring a row is `D` compare-and-index
/// steps per tree with no branch on the tree's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledTrees {
    splits: Vec<Split>,
    trees: usize,
    depth: u32,
    features: Vec<u32>,
    thresholds: Vec<f32>,
    leaves: Vec<f32>,
    base: f32,
}

/// Rows scored side by side.
const BLOCK: usize = 8;

/// The deepest tree compiled; deeper ensembles are scored by ONNX Runtime.
const MAX_DEPTH: u32 = 12;

fn attr<'a>(node: &'a OnnxNode, name: &str) -> Option<&'a OnnxAttribute> {
    node.attribute.iter().find(|a| a.name == name)
}

impl CompiledTrees {
    /// Compiles `onnx` when it is a binary tree ensemble of the supported shape; `Err`
    /// says why not.
    pub fn compile(onnx: &[u8]) -> Result<Self, String> {
        let model = OnnxModel::decode(onnx).map_err(|e| format!("not an ONNX model: {e}"))?;
        let graph = model.graph.ok_or("no graph")?;
        if !graph.initializer.is_empty() {
            return Err("the graph has initializers".into());
        }
        let [ensemble, identity] = graph.node.as_slice() else {
            return Err(format!("{} nodes, expected a tree ensemble and an identity", graph.node.len()));
        };
        if ensemble.op_type != "TreeEnsembleClassifier" || ensemble.domain != "ai.onnx.ml" {
            return Err(format!("the first node is {}", ensemble.op_type));
        }
        if identity.op_type != "Identity"
            || ensemble.input.as_slice() != ["features"]
            || ensemble.output.len() != 2
            || identity.input.as_slice() != [ensemble.output[1].as_str()]
            || identity.output.as_slice() != ["probabilities"]
        {
            return Err("the graph is not features → TreeEnsembleClassifier → Identity → probabilities".into());
        }
        let known = [
            "base_values",
            "class_ids",
            "class_nodeids",
            "class_treeids",
            "class_weights",
            "classlabels_int64s",
            "nodes_falsenodeids",
            "nodes_featureids",
            "nodes_hitrates",
            "nodes_missing_value_tracks_true",
            "nodes_modes",
            "nodes_nodeids",
            "nodes_treeids",
            "nodes_truenodeids",
            "nodes_values",
            "post_transform",
        ];
        if let Some(a) = ensemble.attribute.iter().find(|a| !known.contains(&a.name.as_str())) {
            return Err(format!("unsupported attribute {}", a.name));
        }
        let ints = |name: &str| attr(ensemble, name).map(|a| a.ints.as_slice()).unwrap_or_default();
        let floats = |name: &str| attr(ensemble, name).map(|a| a.floats.as_slice()).unwrap_or_default();
        if attr(ensemble, "post_transform").map(|a| a.s.as_slice()) != Some(b"LOGISTIC") {
            return Err("post_transform is not LOGISTIC".into());
        }
        if ints("classlabels_int64s") != [0, 1] {
            return Err("not a binary classifier with labels 0 and 1".into());
        }
        let base = match floats("base_values") {
            [] => 0.0,
            [b] => *b,
            _ => return Err("more than one base value".into()),
        };
        if ints("nodes_missing_value_tracks_true").iter().any(|&t| t != 0) {
            return Err("missing-value tracking".into());
        }

        let (tree_ids, node_ids, features, values, true_ids, false_ids) = (
            ints("nodes_treeids"),
            ints("nodes_nodeids"),
            ints("nodes_featureids"),
            floats("nodes_values"),
            ints("nodes_truenodeids"),
            ints("nodes_falsenodeids"),
        );
        let modes = attr(ensemble, "nodes_modes").map(|a| a.strings.as_slice()).unwrap_or_default();
        let n = tree_ids.len();
        if [node_ids.len(), features.len(), values.len(), true_ids.len(), false_ids.len(), modes.len()]
            .iter()
            .any(|&len| len != n)
        {
            return Err("node attributes of different lengths".into());
        }
        // One weight per leaf, all for the same class.
        let (c_trees, c_nodes, c_ids, c_weights) =
            (ints("class_treeids"), ints("class_nodeids"), ints("class_ids"), floats("class_weights"));
        if c_nodes.len() != c_trees.len() || c_ids.len() != c_trees.len() || c_weights.len() != c_trees.len() {
            return Err("leaf attributes of different lengths".into());
        }
        if c_ids.iter().any(|&c| c != c_ids[0]) {
            return Err("leaf weights for more than one class".into());
        }
        let mut weights = HashMap::new();
        for ((&t, &node), &w) in c_trees.iter().zip(c_nodes).zip(c_weights) {
            if weights.insert((t, node), w).is_some() {
                return Err(format!("two weights for leaf {node} of tree {t}"));
            }
        }

        // Index every node by (tree, node id).
        let mut index = HashMap::with_capacity(n);
        let mut trees: Vec<i64> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for i in 0..n {
            if index.insert((tree_ids[i], node_ids[i]), i).is_some() {
                return Err(format!("node {} of tree {} twice", node_ids[i], tree_ids[i]));
            }
            if !values[i].is_finite() {
                return Err(format!("node {} of tree {} has threshold {}", node_ids[i], tree_ids[i], values[i]));
            }
            if seen.insert(tree_ids[i]) {
                trees.push(tree_ids[i]);
            }
        }
        let mut compiler = Compiler {
            index,
            weights,
            modes,
            features,
            values,
            true_ids,
            false_ids,
            splits: Vec::new(),
            visited: vec![false; n],
        };
        let roots = trees.iter().map(|&tree| compiler.next(tree, 0, 0)).collect::<Result<Vec<_>, _>>()?;
        if compiler.visited.iter().any(|v| !v) {
            return Err("nodes no tree reaches".into());
        }
        let splits = compiler.splits;
        let depth = roots.iter().map(|&r| depth_of(&splits, r)).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            return Err(format!("trees of depth {depth}; at most {MAX_DEPTH} are compiled"));
        }
        // Laid out complete, a few deep trees among many shallow ones would take far more
        // room than the graph: such an ensemble stays with ONNX Runtime.
        let slots = roots.len().saturating_mul(1usize << depth);
        if slots > 4 * n + 4096 {
            return Err(format!("{} trees of depth {depth} would need {slots} slots for {n} nodes", roots.len()));
        }
        let (inner, outer) = ((1usize << depth) - 1, 1usize << depth);
        let mut compiled = Self {
            trees: roots.len(),
            depth,
            features: vec![0; inner * roots.len()],
            thresholds: vec![f32::INFINITY; inner * roots.len()],
            leaves: vec![0.0; outer * roots.len()],
            splits,
            base,
        };
        for (t, &root) in roots.iter().enumerate() {
            compiled.lay_out(t, 0, root);
        }
        Ok(compiled)
    }

    /// Writes `next` at breadth-first position `at` of tree `t`, and what it leads to.
    fn lay_out(&mut self, t: usize, at: usize, next: Next) {
        let (inner, outer) = ((1usize << self.depth) - 1, 1usize << self.depth);
        if at >= inner {
            if let Next::Leaf(w) = next {
                self.leaves[t * outer + at - inner] = w;
            }
            return;
        }
        let (if_true, if_false) = match next {
            Next::Node(s) => {
                let split = self.splits[s as usize];
                self.features[t * inner + at] = split.feature;
                self.thresholds[t * inner + at] = split.threshold;
                (split.if_true, split.if_false)
            }
            // Above the bottom: both ways lead to this leaf (threshold stays +∞).
            leaf @ Next::Leaf(_) => (leaf, leaf),
        };
        self.lay_out(t, 2 * at + 1, if_true);
        self.lay_out(t, 2 * at + 2, if_false);
    }

    /// How many trees.
    pub fn trees(&self) -> usize {
        self.trees
    }

    /// The depth every tree is laid out to.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Every split's (feature, threshold).
    pub fn thresholds(&self) -> Vec<(usize, f32)> {
        self.splits.iter().map(|s| (s.feature as usize, s.threshold)).collect()
    }

    /// The probability of class 1 for each row.
    pub fn score(&self, rows: &[FeatureVector]) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len());
        let mut blocks = rows.chunks_exact(BLOCK);
        for block in &mut blocks {
            out.extend(self.score_block(block));
        }
        out.extend(blocks.remainder().iter().map(|row| self.score_row(row)));
        out
    }

    /// [`BLOCK`] rows walked through each tree together: their walks do not depend on one
    /// another, so the processor overlaps them instead of waiting on each load in turn.
    fn score_block(&self, rows: &[FeatureVector]) -> [f32; BLOCK] {
        let (inner, outer) = ((1usize << self.depth) - 1, 1usize << self.depth);
        let mut sums = [0f32; BLOCK];
        for t in 0..self.trees {
            let (features, thresholds) =
                (&self.features[t * inner..(t + 1) * inner], &self.thresholds[t * inner..(t + 1) * inner]);
            let leaves = &self.leaves[t * outer..(t + 1) * outer];
            let mut at = [0usize; BLOCK];
            for _ in 0..self.depth {
                for (a, row) in at.iter_mut().zip(rows) {
                    *a = 2 * *a + 1 + usize::from(goes_right(row[features[*a] as usize], thresholds[*a]));
                }
            }
            for (sum, a) in sums.iter_mut().zip(at) {
                *sum += leaves[a - inner];
            }
        }
        sums.map(|sum| logistic(sum + self.base))
    }

    fn score_row(&self, row: &FeatureVector) -> f32 {
        let (inner, outer) = ((1usize << self.depth) - 1, 1usize << self.depth);
        let mut sum = 0f32;
        for t in 0..self.trees {
            let (features, thresholds) =
                (&self.features[t * inner..(t + 1) * inner], &self.thresholds[t * inner..(t + 1) * inner]);
            let mut at = 0usize;
            for _ in 0..self.depth {
                at = 2 * at + 1 + usize::from(goes_right(row[features[at] as usize], thresholds[at]));
            }
            sum += self.leaves[t * outer + at - inner];
        }
        logistic(sum + self.base)
    }
}

/// A `BRANCH_LEQ` split sends `x` right unless `x <= threshold`: NaN, which compares false,
/// goes right, as in ONNX Runtime without missing-value tracking.
#[inline]
#[allow(clippy::neg_cmp_op_on_partial_ord)] // the negation is the NaN rule, not an accident
fn goes_right(x: f32, threshold: f32) -> bool {
    !(x <= threshold)
}

/// How many splits deep `next` goes.
fn depth_of(splits: &[Split], next: Next) -> u32 {
    match next {
        Next::Leaf(_) => 0,
        Next::Node(s) => {
            let split = &splits[s as usize];
            1 + depth_of(splits, split.if_true).max(depth_of(splits, split.if_false))
        }
    }
}

/// Turns the node attributes into [`Split`]s, depth first from each root.
struct Compiler<'a> {
    index: HashMap<(i64, i64), usize>,
    weights: HashMap<(i64, i64), f32>,
    modes: &'a [Vec<u8>],
    features: &'a [i64],
    values: &'a [f32],
    true_ids: &'a [i64],
    false_ids: &'a [i64],
    splits: Vec<Split>,
    visited: Vec<bool>,
}

impl Compiler<'_> {
    fn next(&mut self, tree: i64, node: i64, depth: usize) -> Result<Next, String> {
        // Deep enough for any tree worth compiling; stops a malformed graph's recursion.
        const MAX_WALK: usize = 64;
        if depth > MAX_WALK {
            return Err(format!("tree {tree} is deeper than {MAX_WALK}"));
        }
        let &i = self.index.get(&(tree, node)).ok_or_else(|| format!("tree {tree} refers to missing node {node}"))?;
        if std::mem::replace(&mut self.visited[i], true) {
            return Err(format!("node {node} of tree {tree} is reached twice"));
        }
        match self.modes[i].as_slice() {
            b"LEAF" => Ok(Next::Leaf(self.weights.get(&(tree, node)).copied().unwrap_or(0.0))),
            b"BRANCH_LEQ" => {
                let feature = u32::try_from(self.features[i])
                    .ok()
                    .filter(|&f| (f as usize) < N_FEATURES)
                    .ok_or_else(|| format!("feature {} out of range", self.features[i]))?;
                let at = u32::try_from(self.splits.len()).map_err(|_| "too many nodes".to_owned())?;
                let placeholder = Next::Leaf(0.0);
                self.splits.push(Split {
                    feature,
                    threshold: self.values[i],
                    if_true: placeholder,
                    if_false: placeholder,
                });
                let if_true = self.next(tree, self.true_ids[i], depth + 1)?;
                let if_false = self.next(tree, self.false_ids[i], depth + 1)?;
                let split = &mut self.splits[at as usize];
                split.if_true = if_true;
                split.if_false = if_false;
                Ok(Next::Node(at))
            }
            other => Err(format!("unsupported node mode {}", String::from_utf8_lossy(other))),
        }
    }
}

/// ONNX Runtime's logistic: symmetric, so both tails keep their precision.
fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 { 1.0 - v } else { v }
}
