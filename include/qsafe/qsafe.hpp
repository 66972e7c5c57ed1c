#pragma once
/// \file
/// Umbrella header for qsafe's host (CPU) API. Never includes CUDA headers; the CUDA backend lives in
/// `qsafe/cuda/` and is included by `.cu` translation units only.

#include "qsafe/eigen.hpp"
#include "qsafe/estimators.hpp"
#include "qsafe/execution.hpp"
#include "qsafe/histogram.hpp"
#include "qsafe/histogram_estimators.hpp"
#include "qsafe/lsq.hpp"
#include "qsafe/matrix_view.hpp"
#include "qsafe/metrics.hpp"
#include "qsafe/moments.hpp"
#include "qsafe/newton_schulz.hpp"
#include "qsafe/quant.hpp"
#include "qsafe/softmax.hpp"
#include "qsafe/softmax_variant.hpp"
#include "qsafe/stats.hpp"
#include "qsafe/version.hpp"
