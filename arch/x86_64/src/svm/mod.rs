//! AMD SVM (placeholder while the modules are written).
