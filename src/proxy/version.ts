/** kube-lb's own version (what `kube-lb --version` prints before its runtime's). */
export const KUBE_LB_VERSION = '0.1.0';
