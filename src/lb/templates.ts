/** The templates a playbook may name, each a typed renderer of the inventory. */
import type { Inventory } from '../inventory/schema.js';
import { renderKubeLbConf, renderKubeLbUnit } from './kube-lb.js';
import { renderNginxConf, renderNginxUnit } from './nginx.js';

export const TEMPLATES: Record<string, (inv: Inventory) => string> = {
  'kube-nginx.conf': renderNginxConf,
  'kube-nginx.service': renderNginxUnit,
  'kube-lb.yaml': renderKubeLbConf,
  'kube-lb.service': renderKubeLbUnit,
};
