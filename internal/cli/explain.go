package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/moorage/moorage/internal/pvmatch"
)

// explainCommand is `moorage explain pvc/NAME`: why a claim is where it is.
func explainCommand() *cobra.Command {
	var namespace, kubeconfig string
	cmd := &cobra.Command{
		Use:   "explain pvc/NAME",
		Short: "Explain why a PersistentVolumeClaim is Pending, or why it is bound to its volume",
		Long: "Lists every volume the claim could bind to and the first rule that rejects each one\n" +
			"(storage class, access modes, volume mode, selector, capacity, ...), and what would make it bind.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, name, ok := strings.Cut(args[0], "/")
			if !ok || name == "" {
				return fmt.Errorf("want pvc/NAME, got %q", args[0])
			}
			switch kind {
			case "pvc", "persistentvolumeclaim", "persistentvolumeclaims":
			default:
				return fmt.Errorf("moorage explain knows claims only (pvc/NAME), not %q", kind)
			}
			client, ns, err := explainClient(kubeconfig, namespace)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			return explainClaim(ctx, cmd.OutOrStdout(), client, ns, name)
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "the claim's namespace (default: the kubeconfig context's, else default)")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else ~/.moorage/kubeconfig)")
	return cmd
}

func explainClient(kubeconfig, namespace string) (kubernetes.Interface, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	switch {
	case kubeconfig != "":
		rules.ExplicitPath = kubeconfig
	case os.Getenv("KUBECONFIG") == "":
		if _, err := os.Stat(rules.GetDefaultFilename()); err != nil {
			rules.ExplicitPath = filepath.Join(DefaultDataDir(), "kubeconfig")
		}
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", err
	}
	if namespace == "" {
		if namespace, _, err = cc.Namespace(); err != nil || namespace == "" {
			namespace = "default"
		}
	}
	client, err := kubernetes.NewForConfig(cfg)
	return client, namespace, err
}

func explainClaim(ctx context.Context, out io.Writer, c kubernetes.Interface, ns, name string) error {
	claim, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	pvList, err := c.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	volumes := make([]*corev1.PersistentVolume, len(pvList.Items))
	for i := range pvList.Items {
		volumes[i] = &pvList.Items[i]
	}
	class := pvmatch.ClaimClass(claim)
	var sc *storagev1.StorageClass
	if class != "" {
		sc, _ = c.StorageV1().StorageClasses().Get(ctx, class, metav1.GetOptions{})
	}
	req := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	mode := corev1.PersistentVolumeFilesystem
	if claim.Spec.VolumeMode != nil {
		mode = *claim.Spec.VolumeMode
	}
	fmt.Fprintf(out, "PersistentVolumeClaim %s/%s is %s.\n", ns, name, claim.Status.Phase)
	fmt.Fprintf(out, "  wants: %s, %s, volumeMode %s, storage class %s%s\n", req.String(), modes(claim.Spec.AccessModes), mode, quoteClass(claim), selectorText(claim.Spec.Selector))
	delay := false
	switch {
	case class == "":
	case sc == nil || sc.Name == "":
		fmt.Fprintf(out, "  storage class %q does not exist: only volumes of that class can bind, and nothing provisions it\n", class)
	default:
		if sc.VolumeBindingMode != nil && *sc.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer {
			delay = true
			fmt.Fprintf(out, "  storage class %q binds WaitForFirstConsumer: the claim binds when a pod using it is scheduled\n", class)
		}
		fmt.Fprintf(out, "  provisioner: %s\n", sc.Provisioner)
	}

	if claim.Spec.VolumeName != "" {
		fmt.Fprintf(out, "\nIt names volume %q (spec.volumeName).\n", claim.Spec.VolumeName)
		for _, v := range volumes {
			if v.Name != claim.Spec.VolumeName {
				continue
			}
			if ref := v.Spec.ClaimRef; ref != nil {
				same := ref.Namespace == ns && ref.Name == name && (ref.UID == "" || ref.UID == claim.UID)
				fmt.Fprintf(out, "  the volume's claimRef is %s/%s (uid %s): %s\n", ref.Namespace, ref.Name, orNone(string(ref.UID)), map[bool]string{true: "it points back at this claim", false: "it belongs to another claim"}[same])
			} else {
				fmt.Fprintln(out, "  the volume has no claimRef yet: the binder will bind it if it fits")
			}
		}
	}
	verdicts := pvmatch.Explain(claim, volumes, pvmatch.Options{DelayBinding: delay})
	fmt.Fprintf(out, "\n%d volumes considered:\n", len(verdicts))
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  VOLUME\tVERDICT\tWHY")
	for _, v := range verdicts {
		verdict := "rejected (" + v.Rule + ")"
		if v.Fits {
			verdict = "fits"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", v.Volume, verdict, v.Reason)
	}
	tw.Flush()

	events, err := c.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: fields.Set{
		"involvedObject.kind": "PersistentVolumeClaim", "involvedObject.name": name, "involvedObject.uid": string(claim.UID)}.String()})
	if err == nil && len(events.Items) > 0 {
		sort.Slice(events.Items, func(i, j int) bool { return events.Items[i].LastTimestamp.Before(&events.Items[j].LastTimestamp) })
		fmt.Fprintln(out, "\nEvents:")
		for _, e := range events.Items {
			fmt.Fprintf(out, "  %s  %s: %s\n", e.Type, e.Reason, e.Message)
		}
	}
	return nil
}

func quoteClass(claim *corev1.PersistentVolumeClaim) string {
	if claim.Spec.StorageClassName == nil {
		if _, ok := claim.Annotations[corev1.BetaStorageClassAnnotation]; !ok {
			return "unset (a default class, if one appears, is assigned)"
		}
	}
	return fmt.Sprintf("%q", pvmatch.ClaimClass(claim))
}

func modes(m []corev1.PersistentVolumeAccessMode) string {
	s := make([]string, len(m))
	for i, x := range m {
		s[i] = string(x)
	}
	return strings.Join(s, ",")
}

func selectorText(sel *metav1.LabelSelector) string {
	if sel == nil {
		return ""
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return ", selector (invalid)"
	}
	return ", selector " + s.String()
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
